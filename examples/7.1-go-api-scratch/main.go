package main

import (
    "fmt"
    "log"
    "net/http"
    "os"
)

func main() {
    http.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
        fmt.Fprintf(w, "API version: %s\n", os.Getenv("VERSION"))
    })

    log.Fatal(http.ListenAndServe(":8080", nil))
}

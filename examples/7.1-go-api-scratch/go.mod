module api

go 1.21

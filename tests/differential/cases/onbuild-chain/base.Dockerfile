FROM alpine:latest
WORKDIR /app
ONBUILD ARG GREETING=hello
ONBUILD RUN echo "$GREETING from onbuild" > /app/greeting
ONBUILD WORKDIR /app/sub
ONBUILD USER nobody

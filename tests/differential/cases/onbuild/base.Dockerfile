FROM alpine:latest
ONBUILD COPY trigger.txt /app/
ONBUILD RUN echo built > /built
ONBUILD ENV TRIGGERED=yes
LABEL base=yes

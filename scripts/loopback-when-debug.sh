#!/bin/sh
# `make run` and `make web` with debug on: refuse to serve any address but loopback. Debug pages
# show tracebacks with settings and local variables, and local runs use the development secret
# key that this repository publishes; on the network anybody could read the one and use the
# other. Exits 1 with one line; DJANGO_DEBUG=false (with a key of your own) serves the network.
debug=$(printf '%s' "${DJANGO_DEBUG:-false}" | tr '[:upper:]' '[:lower:]')
case "$debug" in true | on | ok | y | yes | 1) ;; *) exit 0 ;; esac  # django-environ's true
case "${HOST:-127.0.0.1}" in 127.* | localhost | ::1 | "[::1]") exit 0 ;; esac
echo "refusing HOST=$HOST with DJANGO_DEBUG on: debug pages and the published development key" \
  "must not reach the network; use HOST=127.0.0.1, or DJANGO_DEBUG=false and a" \
  "DJANGO_SECRET_KEY of your own" >&2
exit 1

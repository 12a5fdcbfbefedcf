#!/bin/sh
# The web process: uvicorn serving viswals.asgi with its worker processes. The Procfile's `web:`
# line (so `make run` and `make web`), the image's CMD, the tests and the benchmarks all start it.
#
# The workers keep their Prometheus metrics in files in PROMETHEUS_MULTIPROC_DIR, so /metrics
# sums them whichever worker answers (viswals/metrics.py). prometheus-client chooses that mode
# when it is imported, so the directory is set here, before any worker starts:
# - set (the image: /tmp/prometheus): created if missing, emptied of an earlier server's files;
# - unset: a directory of this server's own under the temp directory, named after its process id
#   (exec below keeps it: it is uvicorn's supervisor's), where the directories of servers that
#   have exited are removed first.
set -eu

if [ -z "${PROMETHEUS_MULTIPROC_DIR:-}" ]; then
  servers="${TMPDIR:-/tmp}/viswals-metrics-$(id -u)"
  mkdir -p "$servers"
  for old in "$servers"/*; do
    pid=${old##*/}
    case "$pid" in "" | *[!0-9]*) continue ;; esac
    kill -0 "$pid" 2>/dev/null || rm -rf "$old"
  done
  PROMETHEUS_MULTIPROC_DIR="$servers/$$"
  export PROMETHEUS_MULTIPROC_DIR
fi
mkdir -p "$PROMETHEUS_MULTIPROC_DIR"
rm -f "$PROMETHEUS_MULTIPROC_DIR"/*.db

# --limit-concurrency: connections (open SSE streams included) each worker process holds; one
# more is answered 503 at once rather than left to exhaust file descriptors. Request heads and
# stalled bodies time out in viswals/http_protocol.py (REQUEST_HEAD_TIMEOUT,
# REQUEST_BODY_IDLE_TIMEOUT).
exec uvicorn viswals.asgi:application --host "${HOST:-127.0.0.1}" --port "${PORT:-8080}" \
  --workers "${WEB_CONCURRENCY:-2}" --timeout-graceful-shutdown "${WEB_GRACEFUL_TIMEOUT:-5}" \
  --limit-concurrency "${WEB_LIMIT_CONCURRENCY:-1000}" \
  --no-access-log --no-proxy-headers --http viswals.http_protocol:HeadLimitedHttpToolsProtocol \
  --lifespan off

#!/usr/bin/env bash
# `make run`: start web and worker (the Procfile, through honcho), wait until the web answers,
# publish the sample, then print the local admin credentials, the metrics token and the URLs
# (also kept in .local/credentials). Ctrl-C stops everything and exits 0. With debug on (the
# default) it serves loopback only (scripts/loopback-when-debug.sh).
set -uo pipefail

PORT=${PORT:-8080}
HOST=${HOST:-127.0.0.1}
SAMPLE=${SAMPLE:-data/users.csv}
PY=${PY:-python}
export PORT HOST
sh scripts/loopback-when-debug.sh || exit 1
case "$HOST" in 0.0.0.0 | "::") local_host=127.0.0.1 ;; *) local_host=$HOST ;; esac
base="http://$local_host:$PORT"

mkdir -p .local && chmod 700 .local
credentials=.local/credentials
# /metrics requires this bearer token; kept across runs so a local scraper keeps working.
if [ -z "${METRICS_TOKEN:-}" ]; then
  [ -s .local/metrics_token ] || "$PY" -c 'import secrets; print(secrets.token_urlsafe(32))' \
    >.local/metrics_token
  METRICS_TOKEN=$(cat .local/metrics_token)
fi
export METRICS_TOKEN
# The email keys (viswals/email_keys.py): random, made once into .local/email_keys.env and kept
# across runs (what the workers and publish_csv encrypt and decrypt with). Set in the
# environment, they are used instead.
email_keys=.local/email_keys.env
if [ ! -s "$email_keys" ]; then
  (
    umask 077
    "$PY" -c 'import secrets; t = secrets.token_urlsafe
print(f"EMAIL_ENCRYPTION_KEYS=local1:{t(32)}\nEMAIL_BLIND_INDEX_KEY={t(32)}")' >"$email_keys"
  )
fi
for name in EMAIL_ENCRYPTION_KEYS EMAIL_BLIND_INDEX_KEY; do
  eval "given=\${$name:-}"
  [ -n "$given" ] || export "$name=$(sed -n "s/^$name=//p" "$email_keys" | head -n 1)"
done

set -m  # honcho and its children get a process group of their own: stopped together below
honcho start -f Procfile --port "$PORT" &
honcho_pid=$!

stop() {
  trap - INT TERM
  kill -TERM -- "-$honcho_pid" 2>/dev/null
  wait "$honcho_pid" 2>/dev/null
  echo "viswals stopped."
  exit 0
}
trap stop INT TERM

# The web answers once Django is loaded in every worker process it starts.
for _ in $(seq 600); do
  curl -fsS -o /dev/null --max-time 1 "$base/healthz" 2>/dev/null && break
  if ! kill -0 "$honcho_pid" 2>/dev/null; then
    wait "$honcho_pid"
    echo "make run: the servers stopped (see above)" >&2
    exit 1
  fi
  sleep 0.1
done

"$PY" manage.py publish_csv "$SAMPLE" --wait --timeout 120 \
  || echo "make run: publishing $SAMPLE did not finish (see above); the servers keep running"

# Printed last, so the start-up and ingest lines do not scroll it away; appended to the file,
# so a password shown only when the account was created stays there.
# The writer's token is kept in .local/writer_token and used again while it is valid.
access=$("$PY" manage.py setup_local_access --port "$PORT" --token-file .local/writer_token)
{
  echo "# make run, $(date -u '+%Y-%m-%d %H:%M:%S') UTC"
  echo "$access"
  echo "metrics: curl -H 'Authorization: Bearer $METRICS_TOKEN' $base/metrics"
  echo
} >>"$credentials"
chmod 600 "$credentials"
cat <<BANNER

==================================================================================
viswals is running on $base/ (Ctrl-C stops it)
  API $base/users   docs $base/api/docs/   live $base/users/live   admin $base/admin/
  sample $SAMPLE published; its rejected rows are deliberate (see docs/ingest.md)
$access
  metrics: curl -H 'Authorization: Bearer $METRICS_TOKEN' $base/metrics
  (all of this is kept in $credentials)
==================================================================================
BANNER

wait "$honcho_pid"
status=$?
trap - INT TERM
[ "$status" -eq 0 ] || echo "make run: the servers stopped (exit $status)" >&2
exit "$status"

#!/bin/sh
# The image's entrypoint: export the secrets Compose's `setup` made on the stack's first start
# and the email keys it made (scripts/first-start.sh, kept in a named volume at
# $VISWALS_STATE_DIR: secrets.env, email-keys.env), then run the command.
# A variable already set and not empty (the environment, Compose's .env) wins over the file.
# Without the file (a plain `docker run`, an orchestrator with secrets of its own) it only runs
# the command. `docker compose exec` bypasses entrypoints: prefix the command with this script.
set -eu

state="${VISWALS_STATE_DIR:-/var/lib/viswals}"
for file in "$state/secrets.env" "$state/email-keys.env"; do
  [ -r "$file" ] || continue
  while IFS='=' read -r name value; do
    case "$name" in "" | "#"* | *[!A-Z0-9_]*) continue ;; esac
    eval "given=\${$name:-}"
    # shellcheck disable=SC2154  # set by the eval above
    [ -n "$given" ] || export "$name=$value"
  done <"$file"
done
exec "$@"

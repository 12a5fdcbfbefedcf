#!/bin/sh
# Compose's one-shot `setup`, run on every `docker compose up` before web and worker start:
# 1. the secrets the stack needs and nobody gave (DJANGO_SECRET_KEY, METRICS_TOKEN) are made,
#    random, into $VISWALS_STATE_DIR/secrets.env (a named volume: never in the image or the
#    repository), on the first start only; later starts reuse them. A secret set in the
#    environment or .env is used instead and never written here.
#    The email keys likewise, into $VISWALS_STATE_DIR/email-keys.env (below).
# 2. migrations are applied;
# 3. on the first start, an `admin` account with a random password and a writer API token are
#    made and printed once (kept in $VISWALS_STATE_DIR/credentials, mode 600); later starts
#    change nothing and say how to read them again.
# Usage: first-start.sh [PORT]   (the port the API is published on, for the printed URLs)
# SECRETS_ONLY=1 stops after step 1 (the tests run that part outside a container).
set -eu

state=${VISWALS_STATE_DIR:-/var/lib/viswals}
port=${1:-8080}
here=$(dirname "$0")
umask 077
mkdir -p "$state"
# ensure_secret FILE NAME BYTES [PREFIX] [NOTE]: NAME given in the environment wins; else the
# one kept in FILE; else a new random one (BYTES of base64url, after PREFIX) appended to FILE.
ensure_secret() {
  file=$1 name=$2 bytes=$3 prefix=${4:-} note=${5:-}
  eval "given=\${$name:-}"
  stored=$(sed -n "s/^$name=//p" "$file" | head -n 1)
  if [ -n "$given" ] && [ "$given" != "$stored" ]; then
    echo "setup: $name: given in the environment or .env (used instead of any made here)"
  elif [ -n "$stored" ]; then
    echo "setup: $name: reusing the one made on the first start"
  else
    value=$(python -c "import secrets; print(secrets.token_urlsafe($bytes))")
    echo "$name=$prefix$value" >>"$file"
    echo "setup: $name: made (random, kept in the volume at $file$note)"
  fi
}

secrets="$state/secrets.env"
touch "$secrets"
ensure_secret "$secrets" DJANGO_SECRET_KEY 50
ensure_secret "$secrets" METRICS_TOKEN 50

# The email keys (EMAIL_ENCRYPTION_KEYS, a one-key ring "k1:<key>", and EMAIL_BLIND_INDEX_KEY:
# 32 random bytes each, viswals/email_keys.py) are made the same way into a file of their own:
# once the users table is encrypted, losing them loses every address, so they are backed up
# (and rotated) apart from the other secrets.
email_keys="$state/email-keys.env"
touch "$email_keys"
ensure_secret "$email_keys" EMAIL_ENCRYPTION_KEYS 32 "k1:" "; back it up"
ensure_secret "$email_keys" EMAIL_BLIND_INDEX_KEY 32 "" "; back it up"
[ -z "${SECRETS_ONLY:-}" ] || exit 0

run() { sh "$here/entrypoint.sh" "$@"; }
run python manage.py migrate --noinput

credentials="$state/credentials"
rm -f "$credentials.new"
run python manage.py setup_local_access --only-first --port "$port" --output "$credentials.new"
if [ -s "$credentials.new" ]; then
  mv "$credentials.new" "$credentials"
  echo
  echo "=================================================================================="
  echo "viswals: the stack's first start. Keep these (shown once; also in the volume):"
  cat "$credentials"
  echo "=================================================================================="
else
  echo "setup: the admin account and writer token were made and printed on the first start;"
  echo "  again: docker compose run --rm --no-deps setup cat $credentials"
fi

#!/bin/sh
# Fresh secrets for a new installation, as an env file on standard output (never commit the result):
#   deploy/new-secrets.sh compose > deploy/compose/.env
#   deploy/new-secrets.sh kubernetes > deploy/k8s/secrets.env   # then fill in the two URLs
# The key pepper and the signing key must stay the same for the life of the store: keep a copy safe.
set -eu

hex() { od -An -v -N "$1" -t x1 /dev/urandom | tr -d ' \n'; }
base64_of() { head -c "$1" /dev/urandom | base64 | tr -d '\n'; }

common() {
    echo "LOCKGATE_KEY_PEPPER=$(hex 32)"
    echo "LOCKGATE_SIGNING_KEY=$(base64_of 32)"  # an Ed25519 private key: 32 random bytes, base64
    echo "LOCKGATE_METRICS_TOKEN=$(hex 32)"
}

case "${1:-}" in
    compose)
        echo "POSTGRES_PASSWORD=$(hex 24)"
        echo "REDIS_PASSWORD=$(hex 24)"
        common
        ;;
    kubernetes)
        echo "LOCKGATE_DATABASE_URL=postgresql://lockgate:replace-me@postgres.example.internal:5432/lockgate"
        echo "LOCKGATE_REDIS_URL=redis://:replace-me@redis.example.internal:6379/0"
        common
        ;;
    *)
        echo "usage: $0 compose|kubernetes" >&2
        exit 2
        ;;
esac

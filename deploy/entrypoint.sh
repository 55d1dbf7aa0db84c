#!/bin/sh
# Entrypoint of the lockgate image. Before `lockgate serve` it checks every model file listed in
# /opt/lockgate/model.sha256 (pinned when the image was built: "<sha256>  <path>" lines) and refuses to
# start when one is missing or differs. Every command then runs as `lockgate <command> ...`.
set -eu

SUMS=/opt/lockgate/model.sha256

verify_models() {
    if [ ! -r "$SUMS" ]; then
        echo "lockgate: $SUMS is missing: refusing to start without the pinned model digests" >&2
        exit 1
    fi
    while read -r expected path; do
        case "$expected" in '' | '#'*) continue ;; esac
        if [ ! -f "$path" ]; then
            echo "lockgate: model file $path is missing: refusing to start" >&2
            exit 1
        fi
        actual=$(sha256sum "$path" | cut -d ' ' -f 1)
        if [ "$actual" != "$expected" ]; then
            echo "lockgate: model file $path has sha256 $actual, pinned $expected: refusing to start" >&2
            exit 1
        fi
    done < "$SUMS"
}

if [ "${1:-}" = "serve" ]; then
    verify_models
fi
exec lockgate "$@"

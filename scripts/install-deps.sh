#!/usr/bin/env bash
# Installs what the test suite needs when it is missing. Idempotent: a second
# run on the same machine does nothing.
set -euo pipefail

if ! cargo deny --version >/dev/null 2>&1; then
    echo "==> installing cargo-deny (first run only, takes a few minutes)"
    cargo install cargo-deny --locked --version "^0.20"
fi

# The Redis store's integration tests start their own redis-server on a free
# loopback port; they need the binary.
if ! command -v redis-server >/dev/null 2>&1; then
    echo "==> installing redis-server"
    if [ "$(id -u)" -eq 0 ]; then
        apt-get update -qq && apt-get install -y -qq redis-server >/dev/null
    else
        sudo apt-get update -qq && sudo apt-get install -y -qq redis-server >/dev/null
    fi
fi

#!/usr/bin/env bash
# Installs what the test suite needs when it is missing. Idempotent: a second
# run on the same machine does nothing.
set -euo pipefail

if ! cargo deny --version >/dev/null 2>&1; then
    echo "==> installing cargo-deny (first run only, takes a few minutes)"
    cargo install cargo-deny --locked --version "^0.20"
fi

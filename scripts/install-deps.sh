#!/usr/bin/env bash
# Installs what the test suite needs when it is missing. Idempotent: a second
# run on the same machine does nothing.
set -euo pipefail

if ! cargo deny --version >/dev/null 2>&1; then
    # A debug build: 1m10s from nothing on 2 cores, against 3+ minutes for
    # its release profile (fat LTO, one codegen unit); the checks it runs
    # here take 2 s either way.
    echo "==> installing cargo-deny (first run only, about a minute)"
    cargo install cargo-deny --locked --version "^0.20" --debug
fi

# The Redis store's integration tests start their own redis-server (and a
# 6-node cluster, made with redis-cli) on free loopback ports; they need the
# binaries.
if ! command -v redis-server >/dev/null 2>&1 || ! command -v redis-cli >/dev/null 2>&1; then
    need="redis-server and redis-cli (Debian/Ubuntu: apt-get install redis-server; Fedora: dnf install redis; macOS: brew install redis)"
    if ! command -v apt-get >/dev/null 2>&1; then
        echo "error: the tests need $need; no apt-get here: install them, then run this again" >&2
        exit 1
    fi
    if [ "$(id -u)" -eq 0 ]; then
        as_root=()
    elif command -v sudo >/dev/null 2>&1; then
        as_root=(sudo)
    else
        echo "error: the tests need $need; not root and no sudo: install them, then run this again" >&2
        exit 1
    fi
    echo "==> installing redis-server"
    "${as_root[@]}" apt-get update -qq && "${as_root[@]}" apt-get install -y -qq redis-server >/dev/null
fi

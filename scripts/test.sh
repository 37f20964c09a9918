#!/usr/bin/env bash
# The whole test suite: formatting, lints, licenses, docs, a smoke run of the
# overload lab, and every test. The README and CI (.ci/run) both run this.
set -euo pipefail
cd "$(dirname "$0")/.."

# Each step's header says how long the run has taken so far.
START=$SECONDS
step() { echo "==> [$((SECONDS - START)) s] $*"; }

scripts/install-deps.sh

step "cargo fmt --check"
cargo fmt --all --check

step "cargo clippy (its incompatible_msrv lint holds std APIs to rust-version)"
cargo clippy --workspace --all-targets --all-features -- -D warnings -D clippy::incompatible_msrv

step "cargo deny"
cargo deny --log-level error check licenses bans sources

step "cargo doc, as docs.rs builds it (every feature, --cfg docsrs: gated items badged)"
# RUSTC_BOOTSTRAP lets the stable rustdoc take `feature(doc_cfg)`, as the
# nightly one docs.rs runs does.
RUSTC_BOOTSTRAP=1 RUSTDOCFLAGS="-D warnings --cfg docsrs" \
    cargo doc --workspace --all-features --no-deps --quiet
grep -q 'Available on crate feature `redis` only' \
    "${CARGO_TARGET_DIR:-target}/doc/backpressure/index.html" \
    || { echo "the facade's feature-gated modules are not badged"; exit 1; }

step "cargo package (every published crate packages and builds from its package)"
# It verifies each crate against the others' packages as if they came from a
# registry: their sources are unpacked into $CARGO_HOME/registry/src/-<hash>/
# once per name and version, and their builds are fingerprinted as registry
# crates (never rebuilt while the version stays 0.1.0). A second run on the
# same CARGO_TARGET_DIR (CI keeps one) built against the first run's code and
# failed after a cross-crate API change. So: a target dir of its own, whose
# builds of our crates are thrown away first, with the unpacked sources.
PACKAGE_TARGET="${CARGO_TARGET_DIR:-target}/package-verify"
rm -rf "${CARGO_HOME:-$HOME/.cargo}"/registry/src/-*/backpressure-* \
    "$PACKAGE_TARGET"/package "$PACKAGE_TARGET"/debug/.fingerprint/backpressure-*
CARGO_TARGET_DIR="$PACKAGE_TARGET" cargo package --workspace \
    --exclude backpressure-benches --exclude backpressure-lab --allow-dirty --quiet

step "overload lab (smoke run)"
# Dev builds, with the features `cargo test --workspace --all-features`
# builds with, so that the tests reuse them and the smoke runs below run
# them: a release build of everything the lab links took 139 s of a 690 s
# run from nothing, and `cargo run --example` on the root package alone
# (other features) rebuilt every crate for 40 s more. The lab's smoke run
# takes 15 s unoptimised instead of 2; the README's `--release` is for the
# figures.
cargo build --workspace --all-features --examples --quiet
EXAMPLES="${CARGO_TARGET_DIR:-target}/debug/examples"
"$EXAMPLES"/overload --duration 1 >/dev/null

step "overload lab in a terminal (a pseudo-terminal: its progress line must not hang it)"
# CI has no terminal; the first version of the progress line hung forever on
# one (clear_progress called itself), which only a terminal shows.
# stdin from /dev/null: `timeout` runs `script` in a process group of its
# own, which a terminal stops (SIGTTIN) as soon as `script` reads it, so
# this step hung for its 120 s whenever test.sh itself ran in a terminal.
# The lab still runs on script's pseudo-terminal.
timeout 120 script -qec "$EXAMPLES/overload --duration 1 --loads 2 --stacks adaptive" /dev/null </dev/null >/dev/null

step "loom model of the concurrency limiter's lock-free handoff"
# A dev build: from nothing it builds in half the time of a release one
# (22 s against 47 s here), and the models run in 0.1 s either way.
RUSTFLAGS="--cfg backpressure_loom" CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target}/loom" \
    cargo test -p backpressure-concurrency --lib --quiet loom

step "cargo test"
cargo test --workspace --all-features --all-targets
cargo test --workspace --all-features --doc

step "cargo test, as installed: each layer crate on its default features; the facade with the README's feature sets"
# Workspace runs unify features; a crate's cfg(feature) bug only shows when
# it is built the way a user's Cargo.toml builds it.
cargo test --quiet -p backpressure-core -p backpressure-concurrency -p backpressure-breaker \
    -p backpressure-rate -p backpressure-timeout -p backpressure-shed -p backpressure-retry --lib --tests
cargo test --quiet -p backpressure
for features in http http,axum tonic; do
    cargo test --quiet -p backpressure --no-default-features --features "$features"
done

step "examples (smoke runs; each asserts its own claims)"
"$EXAMPLES"/client >/dev/null
"$EXAMPLES"/reqwest --smoke >/dev/null
"$EXAMPLES"/axum --smoke >/dev/null
"$EXAMPLES"/tonic --smoke >/dev/null
"$EXAMPLES"/overload --real --duration 1 --loads 2 --stacks tower,adaptive >/dev/null
step "done"

#!/usr/bin/env bash
# Instructions and memcpy calls per request for rows of the preset probe,
# counted by callgrind: deterministic, so an A/B of a few instructions is
# visible where wall-clock timing on a shared VM is not. Instructions are not
# time (a clock read in a VM, a store-forwarding stall, cost more than their
# count), so confirm a change with criterion.
#
#   scripts/instructions.sh "tower3" "preset fixed noext" "timeout http server noext"
#
# Each argument is the exact name of a probe row (see
# benches/examples/preset_probe.rs). Each is run twice (100k and 200k timed
# calls after the same warm-up); the difference over 100k is per request.
# Needs valgrind (Debian package `valgrind`).
#
# Rows with the adaptive limit are not repeatable from build to build: it
# measures one request in k, k set by the completion rate, which valgrind
# slows some fiftyfold. Compare code with the fixed-limit rows.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v valgrind >/dev/null || { echo "valgrind is missing: apt-get install valgrind" >&2; exit 1; }
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/backpressure/target}"
cargo build -q --release -p backpressure-benches --example preset_probe
probe="$CARGO_TARGET_DIR/release/examples/preset_probe"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
for row in "$@"; do
    for n in 100000 200000; do
        PROBE_CALLS=$n valgrind --tool=callgrind --callgrind-out-file="$tmp/$n.out" \
            "$probe" "=$row" >/dev/null 2>&1
    done
    python3 - "$row" "$tmp/100000.out" "$tmp/200000.out" <<'PY'
import re, subprocess, sys

def counts(path):
    total = 0
    for line in open(path):
        if line.startswith("totals:"):
            total = int(line.split()[1])
    # Calls into memcpy, summed over its callers (callgrind_annotate's
    # caller tree: the lines just above memcpy's own line).
    tree = subprocess.run(["callgrind_annotate", "--tree=caller", path],
                          capture_output=True, text=True).stdout.splitlines()
    calls = 0
    for line in tree:
        if re.search(r"\*\s+\S*__memcpy\w*", line):
            return total, calls
        if re.match(r"^-+$", line) or not line.strip():
            calls = 0
            continue
        m = re.search(r"<.*\(([0-9,]+)x\)", line)
        if m:
            calls += int(m.group(1).replace(",", ""))
    return total, 0

(t1, m1), (t2, m2) = counts(sys.argv[2]), counts(sys.argv[3])
print(f"{sys.argv[1]:<40} {(t2 - t1) / 100000:7.0f} instructions  {(m2 - m1) / 100000:4.1f} memcpy calls per request")
PY
done

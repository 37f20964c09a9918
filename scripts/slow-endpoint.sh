#!/usr/bin/env bash
# The "slow but not a bottleneck" check of the axum example, with a real
# client: the /slow handler sleeps 200 ms and shares nothing, so 400
# connections can be served at ≈2,000 requests/s. The server preset's
# adaptive limit must let them through.
#
#   scripts/slow-endpoint.sh [AXUM_BINARY]   (default: builds the example)
#
# Needs wrk (Debian package `wrk`). Prints wrk's report and the adaptive
# limit read from /metrics every 2 s. Loopback only; stops by itself.
set -euo pipefail
cd "$(dirname "$0")/.."

port=3111
bin="${1:-}"
if [ -z "$bin" ]; then
    cargo build --release --quiet --example axum
    bin="${CARGO_TARGET_DIR:-target}/release/examples/axum"
fi
command -v wrk >/dev/null || { echo "wrk is not installed (apt-get install wrk)" >&2; exit 1; }

"$bin" --addr "127.0.0.1:$port" --per-ip-rate 1000000 >/dev/null &
server=$!
trap 'kill $server 2>/dev/null || true' EXIT
for _ in $(seq 50); do
    curl -s -o /dev/null "http://127.0.0.1:$port/" && break
    sleep 0.1
done

(
    for _ in $(seq 10); do
        sleep 2
        curl -s "http://127.0.0.1:$port/metrics" |
            awk '/^backpressure_concurrency_limit/ { printf "%s ", $2 }'
    done
    echo
) >/tmp/slow-endpoint-limits.$$ &
poller=$!
wrk -t1 -c400 -d20s --timeout 5s --latency "http://127.0.0.1:$port/slow"
wait $poller || true
echo "adaptive limit every 2 s: $(cat /tmp/slow-endpoint-limits.$$)"
rm -f /tmp/slow-endpoint-limits.$$

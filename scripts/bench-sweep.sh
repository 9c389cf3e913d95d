#!/usr/bin/env bash
# How long a request waits behind the SQLite sweep of a large expired
# backlog (examples/sweep_stall.rs): the batched sweep with claims running
# throughout, against one DELETE for the whole backlog (the baseline, in
# the same run). Markdown on stdout.
#   scripts/bench-sweep.sh [RECORDS]   (default 1000000)
set -CeEuo pipefail
cd "$(dirname "$0")/.."
cargo run --release --quiet --features gateway --example sweep_stall -- "${1:-1000000}"

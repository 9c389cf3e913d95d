#!/usr/bin/env bash
# Side-by-side latency of two or more gateway builds, for before/after
# measurements of one change:
#   scripts/bench-gateway-compare.sh BINARY... [-- GATEWAY-ARGS...]
# Each binary serves from its own new SQLite file (or the store given in
# GATEWAY-ARGS) in front of one hyper upstream. Each is first filled at
# saturation (as in scripts/bench-gateway.sh, so the database and its WAL
# are in the same state as there), then the paced unique-key row (4
# connections each pausing 4 ms: about 1000 requests/s) runs in rounds,
# alternating binaries and the upstream directly, so drift on this noisy
# machine hits every column alike; then, also in alternating rounds, the
# forward row at saturation (unique keys) with the CPU time each gateway
# process spent per request (user and system, every thread, from
# /proc/PID/stat: it moves far less between runs than requests/s), and the
# replay row at saturation (one key, 1 thread, 8 connections). Markdown on
# stdout.
set -CeEuo pipefail

cd "$(dirname "$0")/.."
binaries=()
while (($#)) && [[ $1 != -- ]]; do binaries+=("$(realpath "$1")"); shift; done
[[ ${1-} == -- ]] && shift
if ((${#binaries[@]} == 0)); then
  echo "usage: $0 BINARY... [-- GATEWAY-ARGS...]" >&2
  exit 2
fi
command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }
rounds=${BENCH_ROUNDS:-3}
duration=${BENCH_DURATION:-8s}

cargo build --release --quiet --example hello_hyper
work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "${pid}" 2>/dev/null || true; done
  rm -rf "${work}"
}
trap cleanup EXIT

target/release/examples/hello_hyper >"${work}/upstream" &
pids+=($!)
for _ in $(seq 100); do [[ -s "${work}/upstream" ]] && break; sleep 0.1; done
upstream=$(<"${work}/upstream")
upstream=${upstream%/}

cp scripts/bench/unique.lua "${work}/unique.lua"
cp "${work}/unique.lua" "${work}/paced.lua"
echo 'function delay() return 4 end' >>"${work}/paced.lua"

urls=()
gateways=()
# A store given in GATEWAY-ARGS replaces the default SQLite file.
given_store=false
for arg in "$@"; do [[ ${arg} == --store || ${arg} == --store=* ]] && given_store=true; done
for i in "${!binaries[@]}"; do
  store=()
  ${given_store} || store=(--store "sqlite:${work}/${i}.db")
  "${binaries[i]}" --listen 127.0.0.1:0 --upstream "${upstream}" "${store[@]}" "$@" \
    2>"${work}/${i}.log" &
  pids+=($!)
  gateways+=($!)
  for _ in $(seq 100); do grep -q 'idempotency-gateway ready' "${work}/${i}.log" && break; sleep 0.1; done
  if ! grep -q 'idempotency-gateway ready' "${work}/${i}.log"; then
    echo "${binaries[i]} did not start:" >&2
    cat "${work}/${i}.log" >&2
    exit 1
  fi
  urls+=("http://$(grep -o 'listen=[^ ]*' "${work}/${i}.log" | head -1 | cut -d= -f2)")
  wrk -t1 -c8 -d"${duration}" -s "${work}/unique.lua" "${urls[i]}" >/dev/null
done

latency() { # url script: "p50 / p99"
  wrk --latency -t1 -c4 -d"${duration}" -s "$2" "$1" |
    awk '$1 == "50%" {p50 = $2} $1 == "99%" {p99 = $2} END {print p50 " / " p99}'
}

header="| round | upstream directly |"
rule="|---|---:|"
for b in "${binaries[@]}"; do header+=" $(basename "${b}") |"; rule+="---:|"; done
echo "p50 / p99 latency, paced unique keys (about 1000 requests/s), ${duration} per cell"
echo
echo "${header}"
echo "${rule}"
for round in $(seq "${rounds}"); do
  row="| ${round} | $(latency "${upstream}" "${work}/paced.lua") |"
  for url in "${urls[@]}"; do row+=" $(latency "${url}" "${work}/paced.lua") |"; done
  echo "${row}"
done

# shellcheck source=scripts/bench/cpu.sh
. scripts/bench/cpu.sh
forward() { # url pid: "requests/s, CPU µs/request"
  local before out
  before=$(cpu_ticks "$2")
  out=$(wrk -t1 -c8 -d"${duration}" -s "${work}/unique.lua" "$1")
  awk -v used="$(($(cpu_ticks "$2") - before))" -v ticks="${ticks}" \
    '$2 == "requests" && $3 == "in" {n = $1} $1 == "Requests/sec:" {rps = $2}
     $1 == "Non-2xx" {bad = $NF}
     END {printf "%d/s, %.1f µs", rps, used * 1e6 / ticks / n; if (bad) printf " (%d not 2xx: not forwards)", bad}' <<<"${out}"
}

echo
echo "Forwards at saturation (unique keys, 1 thread, 8 connections): requests/s, gateway CPU per request, ${duration} per cell"
echo
echo "${header/ upstream directly |/}"
echo "${rule/---:|/}"
for round in $(seq "${rounds}"); do
  row="| ${round} |"
  for i in "${!urls[@]}"; do row+=" $(forward "${urls[i]}" "${gateways[i]}") |"; done
  echo "${row}"
done

throughput() { # url script: "requests/s (p99)"
  wrk --latency -t1 -c8 -d"${duration}" -s "$2" "$1" |
    awk '$1 == "Requests/sec:" {rps = $2} $1 == "99%" {p99 = $2} END {printf "%d/s (p99 %s)", rps, p99}'
}

echo
echo "Replays at saturation (one key, 1 thread, 8 connections), ${duration} per cell"
echo
echo "${header/upstream directly/hello-world upstream}"
echo "${rule}"
for round in $(seq "${rounds}"); do
  row="| ${round} | $(throughput "${upstream}" scripts/bench/repeated.lua) |"
  for url in "${urls[@]}"; do row+=" $(throughput "${url}" scripts/bench/repeated.lua) |"; done
  echo "${row}"
done

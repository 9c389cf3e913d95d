#!/usr/bin/env bash
# Gateway benchmark: wrk at a fixed, moderate concurrency against
#   - a bare hyper hello-world (examples/hello_hyper.rs), the baseline;
#   - that same server as the upstream, directly;
#   - the gateway in front of it with each store, for unique keys (every
#     request forwarded and stored) and for one repeated key (every request
#     replayed), and SQLite with --durability full; PostgreSQL runs on this
#     machine with its default durability (fsync and synchronous_commit on).
# Two tables: throughput at saturation (closed loop), and latency at a
# moderate fixed rate (each connection paced with wrk's delay() hook, about
# 1000 requests/s in all), where the gateway's added latency shows without
# queueing. All in the same run on this machine; Markdown on stdout;
# docs/performance.md records results.
set -CeEuo pipefail

cd "$(dirname "$0")/.."
need() { command -v "$1" >/dev/null 2>&1; }
for bin in /usr/lib/postgresql/*/bin; do
  [[ -x "${bin}/initdb" ]] && PATH="${PATH}:${bin}"
done
if ! need wrk || ! need redis-server || ! need initdb; then
  apt-get update -qq && apt-get install -y -qq wrk redis-server postgresql >/dev/null
  for bin in /usr/lib/postgresql/*/bin; do
    [[ -x "${bin}/initdb" ]] && PATH="${PATH}:${bin}"
  done
fi

duration=${BENCH_DURATION:-8s}
connections=${BENCH_CONNECTIONS:-8}

cargo build --release --quiet --bin idempotency-gateway --example hello_hyper
work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "${pid}" 2>/dev/null || true; done
  rm -rf "${work}"
}
trap cleanup EXIT

wait_for_line() { # file
  for _ in $(seq 100); do [[ -s "$1" ]] && return; sleep 0.1; done
  echo "no output in $1" >&2
  exit 1
}

target/release/examples/hello_hyper >"${work}/upstream" &
pids+=($!)
wait_for_line "${work}/upstream"
upstream=$(<"${work}/upstream")
upstream=${upstream%/}

redis_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
redis-server --port "${redis_port}" --bind 127.0.0.1 --save '' --appendonly no >/dev/null &
pids+=($!)
for _ in $(seq 100); do redis-cli -p "${redis_port}" ping >/dev/null 2>&1 && break; sleep 0.1; done

# PostgreSQL refuses to run as root: as nobody then.
as_server=()
if ((EUID == 0)); then
  chown nobody:nogroup "${work}"
  as_server=(setpriv --reuid=nobody --regid=nogroup --clear-groups)
fi
pg_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"${as_server[@]}" initdb --auth=trust --username=gateway -D "${work}/pg" >/dev/null
"${as_server[@]}" postgres -D "${work}/pg" -p "${pg_port}" -h 127.0.0.1 -k "${work}" -c max_connections=100 \
  >"${work}/pg.log" 2>&1 &
pids+=($!)
for _ in $(seq 200); do grep -q 'ready to accept connections' "${work}/pg.log" && break; sleep 0.1; done


for script in unique plain repeated; do
  cp "scripts/bench/${script}.lua" "${work}/${script}.lua"
  cp "${work}/${script}.lua" "${work}/${script}-paced.lua"
  # 4 connections, each waiting 4 ms between requests: ~1000 requests/s.
  echo 'function delay() return 4 end' >>"${work}/${script}-paced.lua"
done

start_gateway() { # name, store, extra args...
  local name=$1 store=$2
  shift 2
  target/release/idempotency-gateway --listen 127.0.0.1:0 --upstream "${upstream}" --store "${store}" "$@" \
    2>"${work}/${name}.log" &
  pids+=($!)
  for _ in $(seq 100); do grep -q 'idempotency-gateway ready' "${work}/${name}.log" 2>/dev/null && break; sleep 0.1; done
  gateway="http://$(grep -o 'listen=[^ ]*' "${work}/${name}.log" | head -1 | cut -d= -f2)"
}

# wrk's --latency output: requests/s and the 50th and 99th percentiles.
run() { # label, url, script [connections]
  local out
  curl -s -o /dev/null -X POST -H 'Idempotency-Key: bench-repeated' -H 'Content-Type: application/json' --data '{"ref":"v1"}' "$2/deployments"
  out=$(wrk --latency -t1 -c"${4:-${connections}}" -d"${duration}" -s "$3" "$2")
  local rps p50 p99 errors
  rps=$(awk '/Requests\/sec/ {print $2}' <<<"${out}")
  p50=$(awk '$1 == "50%" {print $2}' <<<"${out}")
  p99=$(awk '$1 == "99%" {print $2}' <<<"${out}")
  errors=$(awk '/Non-2xx/ {print $NF}' <<<"${out}")
  printf '| %s | %s | %s | %s | %s |\n' "$1" "${rps}" "${p50}" "${p99}" "${errors:-0}"
}

echo "### Throughput at saturation"
echo
echo "wrk: 1 thread, ${connections} connections, ${duration} per row, as fast as the machine allows; $(nproc) cores shared by wrk, gateway, upstream and Redis."
echo
echo "| setup | requests/s | p50 | p99 | non-2xx |"
echo "|---|---:|---:|---:|---:|"
run "hyper hello-world (baseline)" "${upstream}" "${work}/plain.lua"
run "upstream directly, unique keys" "${upstream}" "${work}/unique.lua"
start_gateway memory memory
memory=${gateway}
run "gateway, memory, unique keys (forward)" "${gateway}" "${work}/unique.lua"
run "gateway, memory, one key (replay)" "${gateway}" "${work}/repeated.lua"
start_gateway sqlite "sqlite:${work}/normal.db"
sqlite=${gateway}
run "gateway, SQLite, unique keys (forward)" "${gateway}" "${work}/unique.lua"
run "gateway, SQLite, one key (replay)" "${gateway}" "${work}/repeated.lua"
start_gateway sqlite-full "sqlite:${work}/full.db" --durability full
sqlite_full=${gateway}
run "gateway, SQLite --durability full, unique keys" "${gateway}" "${work}/unique.lua"
start_gateway redis "redis://127.0.0.1:${redis_port}/0"
redis=${gateway}
run "gateway, Redis, unique keys (forward)" "${gateway}" "${work}/unique.lua"
run "gateway, Redis, one key (replay)" "${gateway}" "${work}/repeated.lua"
start_gateway postgres "postgres://gateway@127.0.0.1:${pg_port}/postgres"
postgres=${gateway}
# Replays first: after the forward row, PostgreSQL's own background work
# (autovacuum, checkpoints) shares the cores with wrk and the gateway.
run "gateway, PostgreSQL, one key (replay)" "${gateway}" "${work}/repeated.lua"
run "gateway, PostgreSQL, unique keys (forward)" "${gateway}" "${work}/unique.lua"

echo
echo "### Latency at a moderate fixed rate"
echo
echo "wrk: 1 thread, 4 connections each pausing 4 ms between requests (about 1000 requests/s), ${duration} per row."
echo
echo "| setup | requests/s | p50 | p99 | non-2xx |"
echo "|---|---:|---:|---:|---:|"
run "upstream directly, unique keys" "${upstream}" "${work}/unique-paced.lua" 4
run "gateway, memory, unique keys (forward)" "${memory}" "${work}/unique-paced.lua" 4
run "gateway, SQLite, unique keys (forward)" "${sqlite}" "${work}/unique-paced.lua" 4
run "gateway, SQLite --durability full, unique keys" "${sqlite_full}" "${work}/unique-paced.lua" 4
run "gateway, Redis, unique keys (forward)" "${redis}" "${work}/unique-paced.lua" 4
run "gateway, PostgreSQL, unique keys (forward)" "${postgres}" "${work}/unique-paced.lua" 4
run "gateway, SQLite, one key (replay)" "${sqlite}" "${work}/repeated-paced.lua" 4
run "gateway, PostgreSQL, one key (replay)" "${postgres}" "${work}/repeated-paced.lua" 4

#!/usr/bin/env bash
# Gateway benchmark: wrk at a fixed, moderate concurrency against
#   - a bare hyper hello-world (examples/hello_hyper.rs), the baseline;
#   - that same server as the upstream, directly;
#   - nginx (Debian's package, its own config, started here on a free
#     loopback port) as a plain proxy_pass hop with keep-alive to the
#     upstream: the peer the gateway's forward path is measured against;
#   - the gateway in front of it with each store, for unique keys (every
#     request forwarded and stored) and for one repeated key (every request
#     replayed), and SQLite with --durability full; PostgreSQL runs on this
#     machine with its default durability (fsync and synchronous_commit on).
# Three tables: throughput at saturation (wrk, closed loop); latency at a
# fixed rate of 1000 requests/s from examples/paced_load.rs (open loop, a
# fresh key per request, latency counted from when each request was due,
# so stalls are not hidden: what wrk2 does, which the package registries
# do not carry), where the added latency shows without queueing; and the
# ratios the gateway's goals are stated in (against nginx in this run).
# Both measured tables are medians of BENCH_ROUNDS (3) rounds, the rows of
# each round in rotated order, BENCH_DURATION (8s) per measurement. The
# saturation table also gives the CPU time the serving process (nginx: its
# master and workers) spent per request, from /proc: it moves far less
# between runs than requests/s on a shared machine, and it is what the
# throughput ratios come down to when every process shares the cores.
# The driver's own cost: it runs beside wrk against the bare baseline at
# saturation. All in the same run on this machine; Markdown on stdout;
# docs/performance.md records results.
set -CeEuo pipefail

cd "$(dirname "$0")/.."
need() { command -v "$1" >/dev/null 2>&1; }
for bin in /usr/lib/postgresql/*/bin; do
  [[ -x "${bin}/initdb" ]] && PATH="${PATH}:${bin}"
done
if ! need wrk || ! need redis-server || ! need initdb || ! need nginx; then
  apt-get update -qq && apt-get install -y -qq wrk redis-server postgresql nginx-light >/dev/null
  for bin in /usr/lib/postgresql/*/bin; do
    [[ -x "${bin}/initdb" ]] && PATH="${PATH}:${bin}"
  done
fi

duration=${BENCH_DURATION:-8s}
rounds=${BENCH_ROUNDS:-3}
connections=${BENCH_CONNECTIONS:-8}

gateway_bin=${GATEWAY_BIN:-target/release/idempotency-gateway}
cargo build --release --quiet --bin idempotency-gateway --example hello_hyper --example paced_load
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

# The processes serving each URL, for the CPU column.
declare -A serving
target/release/examples/hello_hyper >"${work}/upstream" &
pids+=($!)
upstream_pid=$!
wait_for_line "${work}/upstream"
upstream=$(<"${work}/upstream")
upstream=${upstream%/}
serving[${upstream}]=${upstream_pid}

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

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
# nginx as a plain proxy hop: keep-alive to the upstream (HTTP/1.1, no
# Connection header), the default access log, one worker per core.
nginx_port=$(free_port)
cat >"${work}/nginx.conf" <<NGINX
worker_processes auto;
daemon off;
pid ${work}/nginx.pid;
error_log ${work}/nginx-error.log warn;
events { worker_connections 4096; }
http {
  access_log ${work}/nginx-access.log;
  client_body_temp_path ${work}/nginx-body;
  proxy_temp_path ${work}/nginx-proxy;
  fastcgi_temp_path ${work}/nginx-fastcgi;
  uwsgi_temp_path ${work}/nginx-uwsgi;
  scgi_temp_path ${work}/nginx-scgi;
  upstream api {
    server ${upstream#http://};
    keepalive 64;
  }
  server {
    listen 127.0.0.1:${nginx_port};
    keepalive_requests 1000000;
    location / {
      proxy_pass http://api;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }
  }
}
NGINX
nginx -p "${work}" -c "${work}/nginx.conf" -e "${work}/nginx-error.log" &
pids+=($!)
nginx_pid=$!
nginx="http://127.0.0.1:${nginx_port}"
for _ in $(seq 100); do curl -s -o /dev/null "${nginx}/" && break; sleep 0.1; done
serving[${nginx}]="${nginx_pid} $(pgrep -P "${nginx_pid}" | tr '\n' ' ')"


for script in unique plain repeated get; do
  cp "scripts/bench/${script}.lua" "${work}/${script}.lua"
done

start_gateway() { # name, store, extra args...
  local name=$1 store=$2
  shift 2
  "${gateway_bin}" --listen 127.0.0.1:0 --upstream "${upstream}" --store "${store}" "$@" \
    2>"${work}/${name}.log" &
  pids+=($!)
  for _ in $(seq 100); do grep -q 'idempotency-gateway ready' "${work}/${name}.log" 2>/dev/null && break; sleep 0.1; done
  gateway="http://$(grep -o 'listen=[^ ]*' "${work}/${name}.log" | head -1 | cut -d= -f2)"
  serving[${gateway}]=$!
}

# shellcheck source=scripts/bench/cpu.sh
. scripts/bench/cpu.sh

declare -A rps p99 rpss sat_p50s sat_p99s sat_errors sat_cpus cpu
# One wrk measurement of row `id` (--latency output: requests/s, the 50th
# and 99th percentiles, non-2xx answers; and the serving processes' CPU µs
# per request), appended to its lists.
wrk_once() { # id, url, script (a name in scripts/bench/)
  local out before
  curl -s -o /dev/null -X POST -H 'Idempotency-Key: bench-repeated' -H 'Content-Type: application/json' --data '{"ref":"v1"}' "$2/deployments"
  # shellcheck disable=SC2086 # a list of pids
  before=$(cpu_ticks ${serving[$2]})
  out=$(wrk --latency -t1 -c"${connections}" -d"${duration}" -s "${work}/$3.lua" "$2")
  # shellcheck disable=SC2086
  sat_cpus[$1]+=" $(awk -v used="$(($(cpu_ticks ${serving[$2]}) - before))" -v ticks="${ticks}" \
    '/requests in/ { printf "%.1f", used * 1000000 / ticks / $1 }' <<<"${out}")"
  rpss[$1]+=" $(awk '/Requests\/sec/ {printf "%.0f", $2}' <<<"${out}")"
  sat_p50s[$1]+=" $(awk '$1 == "50%" {print $2}' <<<"${out}")"
  sat_p99s[$1]+=" $(awk '$1 == "99%" {print $2}' <<<"${out}")"
  sat_errors[$1]+=" $(awk '/Non-2xx/ {n = $NF} END {print n + 0}' <<<"${out}")"
}

# wrk prints latencies with units (850.00us, 1.20ms): microseconds, for sorting.
to_us() { tr ' ' '\n' <<<"$1" | grep . | awk '/ms$/ { printf "%.0f\n", $0 * 1000; next } /us$/ { printf "%.0f\n", $0 + 0; next } /s$/ { printf "%.0f\n", $0 * 1000000 }' | tr '\n' ' '; }

# examples/paced_load.rs at 1000 requests/s: one measurement of row `id`,
# appended to its p50, p99, max and non-2xx lists.
declare -A p50s p99s maxs non2xx
paced_once() { # id, url, keys
  local out
  out=$(target/release/examples/paced_load --url "$2/deployments" --rate 1000 --connections 8 \
    --duration "${duration%s}" --keys "$3")
  p50s[$1]+=" $(grep -o 'p50_us=[0-9]*' <<<"${out}" | cut -d= -f2)"
  p99s[$1]+=" $(grep -o 'p99_us=[0-9]*' <<<"${out}" | cut -d= -f2)"
  maxs[$1]+=" $(grep -o 'max_us=[0-9]*' <<<"${out}" | cut -d= -f2)"
  non2xx[$1]+=" $(grep -o 'non2xx=[0-9]*' <<<"${out}" | cut -d= -f2)"
}

# Calls `measure id url arg` for every row ("id|label|url|arg") in each of
# the rounds, the rows of each round in rotated order, so a drift in this
# shared machine's speed reaches every row alike.
in_rotated_rounds() { # measure, rows...
  local measure=$1
  shift
  local rows=("$@") round i id url arg
  for ((round = 0; round < rounds; round++)); do
    for ((i = 0; i < ${#rows[@]}; i++)); do
      IFS='|' read -r id _ url arg <<<"${rows[(i + round) % ${#rows[@]}]}"
      "${measure}" "${id}" "${url}" "${arg}"
    done
  done
}

median() { tr ' ' '\n' <<<"$1" | grep . | sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }

# Room for every record the rows store: in a fast phase of the machine the
# saturation rounds alone store about a million, past the default bound,
# and the paced row would then measure 503s.
start_gateway memory memory --memory-max-bytes 8GiB
memory=${gateway}
start_gateway sqlite "sqlite:${work}/normal.db"
sqlite=${gateway}
start_gateway sqlite-full "sqlite:${work}/full.db" --durability full
sqlite_full=${gateway}
start_gateway redis "redis://127.0.0.1:${redis_port}/0"
redis=${gateway}
start_gateway postgres "postgres://gateway@127.0.0.1:${pg_port}/postgres"
postgres=${gateway}

echo "### Throughput at saturation"
echo
echo "wrk: 1 thread, ${connections} connections, ${duration} per measurement, as fast as the machine allows; $(nproc) cores shared by wrk, the proxy, the upstream and the stores; medians of ${rounds} rounds in rotated order."
echo
echo "| setup | requests/s | p50 µs | p99 µs | non-2xx | CPU µs/request |"
echo "|---|---:|---:|---:|---:|---:|"
# Rounds, as in the latency table below: the ratios against nginx compare
# rows measured minutes apart at most.
saturation_rows=(
  "hello|hyper hello-world (baseline)|${upstream}|plain"
  "direct|upstream directly, unique keys|${upstream}|unique"
  "nginx|nginx proxy_pass, unique keys (forward)|${nginx}|unique"
  "nginx-get|nginx proxy_pass, plain GET|${nginx}|get"
  "get|gateway, plain GET (pass-through, no store)|${memory}|get"
  "memory|gateway, memory, unique keys (forward)|${memory}|unique"
  "memory-replay|gateway, memory, one key (replay)|${memory}|repeated"
  "sqlite|gateway, SQLite, unique keys (forward)|${sqlite}|unique"
  "sqlite-replay|gateway, SQLite, one key (replay)|${sqlite}|repeated"
  "sqlite-full|gateway, SQLite --durability full, unique keys|${sqlite_full}|unique"
  "redis|gateway, Redis, unique keys (forward)|${redis}|unique"
  "redis-replay|gateway, Redis, one key (replay)|${redis}|repeated"
  "postgres|gateway, PostgreSQL, unique keys (forward)|${postgres}|unique"
  "postgres-replay|gateway, PostgreSQL, one key (replay)|${postgres}|repeated"
)
in_rotated_rounds wrk_once "${saturation_rows[@]}"
for row in "${saturation_rows[@]}"; do
  IFS='|' read -r id label _ <<<"${row}"
  rps[${id}]=$(median "${rpss[${id}]}")
  cpu[${id}]=$(median "${sat_cpus[${id}]}")
  printf '| %s | %s | %s | %s | %s | %s |\n' "${label}" "${rps[${id}]}" "$(median "$(to_us "${sat_p50s[${id}]}")")" \
    "$(median "$(to_us "${sat_p99s[${id}]}")")" "$(median "${sat_errors[${id}]}")" "${cpu[${id}]}"
done

echo
echo "### Latency at 1000 requests/s"
echo
echo "examples/paced_load.rs: open loop at 1000 requests/s over 8 connections, a fresh key per request (one key for replays), latency from when each request was due, ${duration} per measurement; medians of ${rounds} rounds in rotated order. Added: p99 over the upstream directly."
echo
echo "| setup | p50 µs | p99 µs | max µs | added p99 µs | non-2xx |"
echo "|---|---:|---:|---:|---:|---:|"
# Each cell is the median of the rounds.
rows=(
  "direct|upstream directly|${upstream}|unique"
  "nginx|nginx proxy_pass|${nginx}|unique"
  "memory|gateway, memory, forward|${memory}|unique"
  "sqlite|gateway, SQLite, forward|${sqlite}|unique"
  "sqlite-full|gateway, SQLite --durability full, forward|${sqlite_full}|unique"
  "redis|gateway, Redis, forward|${redis}|unique"
  "postgres|gateway, PostgreSQL, forward|${postgres}|unique"
  "sqlite-replay|gateway, SQLite, replay|${sqlite}|one"
  "postgres-replay|gateway, PostgreSQL, replay|${postgres}|one"
)
for url in "${sqlite}" "${postgres}"; do
  curl -s -o /dev/null -X POST -H 'Idempotency-Key: paced-one' -H 'Content-Type: application/json' --data '{"ref":"v1"}' "${url}/deployments"
done
in_rotated_rounds paced_once "${rows[@]}"
for row in "${rows[@]}"; do
  IFS='|' read -r id label _ <<<"${row}"
  p99[${id}]=$(median "${p99s[${id}]}")
done
for row in "${rows[@]}"; do
  IFS='|' read -r id label _ <<<"${row}"
  printf '| %s | %s | %s | %s | %+d | %s |\n' "${label}" "$(median "${p50s[${id}]}")" "${p99[${id}]}" \
    "$(median "${maxs[${id}]}")" "$((p99[${id}] - p99[direct]))" "$(median "${non2xx[${id}]}")"
done
echo
echo "### The load generator's own cost"
echo
driver=$(target/release/examples/paced_load --url "${upstream}/deployments" --rate 0 --connections "${connections}" \
  --duration "${duration%s}" --keys unique)
driver_rps=$(grep -o 'rps=[0-9]*' <<<"${driver}" | cut -d= -f2)
echo "Against the bare baseline, unique keys, ${connections} connections, closed loop: wrk ${rps[direct]%.*} requests/s, paced_load ${driver_rps} requests/s ($(ratio "${driver_rps}" "${rps[direct]}")× wrk's rate): at 1000 requests/s it uses a small fraction of one core."

added() { echo $((p99[$1] - p99[direct])); }
# The ratio of two added p99s, or why there is none.
added_ratio() { (($(added nginx) > 0)) && echo "$(ratio "$(added "$1")" "$(added nginx)")×" || echo "n/a (nginx added nothing measurable)"; }
echo
echo "### Against nginx in this run"
echo
echo "| goal | measured | target |"
echo "|---|---:|---:|"
echo "| forward, SQLite, throughput / nginx | $(ratio "${rps[sqlite]}" "${rps[nginx]}")× | ≥ 0.5× |"
echo "| forward, memory, throughput / nginx | $(ratio "${rps[memory]}" "${rps[nginx]}")× | ≥ 0.9× |"
echo "| plain GET, throughput / nginx | $(ratio "${rps[get]}" "${rps[nginx-get]}")× | ≥ 0.8× |"
echo "| replay, SQLite, throughput / nginx forward | $(ratio "${rps[sqlite-replay]}" "${rps[nginx]}")× | ≥ 1× |"
echo "| replay, PostgreSQL, throughput / nginx forward | $(ratio "${rps[postgres-replay]}" "${rps[nginx]}")× | ≥ 1× |"
echo "| forward, PostgreSQL, throughput / nginx | $(ratio "${rps[postgres]}" "${rps[nginx]}")× | reported |"
echo "| forward, CPU per request: memory / nginx, SQLite / nginx | $(ratio "${cpu[memory]}" "${cpu[nginx]}")×, $(ratio "${cpu[sqlite]}" "${cpu[nginx]}")× | reported |"
echo "| added p99 at 1000/s, SQLite forward / nginx's | $(added sqlite) / $(added nginx) µs = $(added_ratio sqlite) | ≤ 2× |"
echo "| added p99 at 1000/s, memory forward / nginx's | $(added memory) / $(added nginx) µs = $(added_ratio memory) | ≤ 2× |"

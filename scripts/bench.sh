#!/usr/bin/env bash
# Benchmarks of the client, compared with a baseline measured in the same run:
#   1. whole-process time of one POST to a loopback server, against curl;
#   2. fingerprint hashing throughput and peak memory on a 1 GiB body-file
#      (`idempotent-request key`, which hashes and sends nothing);
#   3. the size of the release binary.
# Prints a Markdown report on stdout; docs/performance.md records results.
set -CeEuo pipefail

cd "$(dirname "$0")/.."
need() { command -v "$1" >/dev/null 2>&1; }
if ! need hyperfine || [[ ! -x /usr/bin/time ]]; then
  apt-get update -qq && apt-get install -y -qq hyperfine time >/dev/null
fi

cargo build --release --quiet --no-default-features --bin idempotent-request
cargo build --release --quiet --example loopback_server
bin=target/release/idempotent-request
work=$(mktemp -d)
trap 'kill "${server_pid:-0}" 2>/dev/null || true; rm -rf "${work}"' EXIT

target/release/examples/loopback_server >"${work}/url" &
server_pid=$!
for _ in $(seq 50); do [[ -s "${work}/url" ]] && break; sleep 0.1; done
url=$(cat "${work}/url")

echo "## Machine"
echo
echo "- CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | xargs), $(nproc) cores"
echo "- Memory: $(free -h | awk '/Mem:/ {print $2}')"
echo "- Kernel: $(uname -r); $(rustc --version); $(curl --version | head -1 | cut -d' ' -f1-2)"
echo
echo "## One POST to a loopback server, whole process"
echo
# --shell=none and --output=null: no shell start-up or terminal in the timings.
hyperfine --shell=none --output=null --style none --warmup 20 --runs 300 \
  --export-json "${work}/post.json" \
  --command-name curl \
  "curl -s -X POST -H 'Content-Type: application/json' -H 'Idempotency-Key: 0c912e23-e230-8723-a6ce-f4ec917af1f9' --data '{\"ref\":\"v1\"}' ${url}deployments" \
  --command-name idempotent-request \
  "${bin} --url ${url}deployments --json '{\"ref\":\"v1\"}' --key-salt bench" \
  >/dev/null
python3 - "${work}/post.json" <<'PY'
import json, sys
results = json.load(open(sys.argv[1]))["results"]
print("| command | median [ms] | mean ± σ [ms] | min [ms] | max [ms] |")
print("|---|---:|---:|---:|---:|")
for r in results:
    print(f"| `{r['command']}` | {r['median']*1e3:.2f} | {r['mean']*1e3:.2f} ± {r['stddev']*1e3:.2f} | {r['min']*1e3:.2f} | {r['max']*1e3:.2f} |")
curl, ours = results[0]["median"], results[1]["median"]
print(f"\nidempotent-request / curl, medians: {ours / curl:.2f}x (target: at most 1.5x)")
PY
echo

echo "## Hashing a 1 GiB body-file for the key"
echo
head -c 1073741824 /dev/urandom >"${work}/1g.bin"
head -c 1048576 /dev/urandom >"${work}/1m.bin"
hyperfine --shell=none --output=null --style none --warmup 1 --runs 7 \
  --export-json "${work}/hash.json" \
  --command-name "sha256sum (baseline)" "sha256sum ${work}/1g.bin" \
  --command-name "idempotent-request key" "${bin} key --url ${url} --key-salt bench --body-file ${work}/1g.bin" \
  >/dev/null
python3 - "${work}/hash.json" <<'PY'
import json, sys
results = json.load(open(sys.argv[1]))["results"]
print("| command | median [s] | mean ± σ [s] | throughput (median) |")
print("|---|---:|---:|---:|")
for r in results:
    print(f"| `{r['command']}` | {r['median']:.3f} | {r['mean']:.3f} ± {r['stddev']:.3f} | {2**30 / r['median'] / 1e9:.2f} GB/s |")
PY
echo
rss() { /usr/bin/time -f '%M' "${bin}" key --url "${url}" --key-salt bench --body-file "$1" 2>&1 >/dev/null | tail -1; }
echo "Peak RSS: $(rss "${work}/1m.bin") KiB with a 1 MiB body, $(rss "${work}/1g.bin") KiB with a 1 GiB body."
echo

echo "## Release binary"
echo
echo "$(stat -c %s "${bin}") bytes ($(numfmt --to=iec-i --suffix=B "$(stat -c %s "${bin}")")), stripped, LTO, $(rustc -vV | sed -n 's/host: //p')."

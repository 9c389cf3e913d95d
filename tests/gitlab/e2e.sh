#!/usr/bin/env bash
# End-to-end test of the GitLab CI template under a real runner
# implementation: gitlab-ci-local (shell executor) runs tests/gitlab/pipeline.yml,
# which includes templates/gitlab/idempotent-request.yml. The template
# installs the binary the way it does in production: from a release (served
# here from 127.0.0.1) verified against the manifest it carries, stamped for
# this test by the release workflow's own script. The API loses the first
# answer of each key: the first run must get a replay on its second
# attempt, a retry of the job must send the same key and get the replay at
# once, a later job must read the outputs, and the API must have acted once.
set -CeEuo pipefail

cd "$(dirname "$0")/../.."
command -v gitlab-ci-local >/dev/null || { echo "gitlab-ci-local is not installed: bash scripts/test.sh installs it" >&2; exit 1; }

work=$(mktemp -d)
trap 'kill "${api_pid:-0}" "${release_pid:-0}" 2>/dev/null || true; rm -rf "${work}"' EXIT

cargo build --quiet --bin idempotent-request --example loopback_server
version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -1)

# --- a release on loopback ---------------------------------------------------
release="${work}/release"
mkdir -p "${release}/stage"
cp target/debug/idempotent-request "${release}/stage/"
asset="idempotent-request-${version}-x86_64-unknown-linux-musl.tar.gz"
tar -czf "${release}/${asset}" -C "${release}/stage" idempotent-request
asset_sha=$(sha256sum "${release}/${asset}" | cut -d' ' -f1)
binary_sha=$(sha256sum "${release}/stage/idempotent-request" | cut -d' ' -f1)
cat >"${work}/manifest.json" <<MANIFEST
{"version": "${version}", "repository": "acme/idempotent-request", "assets": {
  "x86_64-unknown-linux-musl": {"name": "${asset}", "sha256": "${asset_sha}", "binary_sha256": "${binary_sha}"}}}
MANIFEST
(cd "${release}" && exec python3 -u -m http.server --bind 127.0.0.1 0) >"${work}/release.log" 2>&1 &
release_pid=$!
for _ in $(seq 100); do grep -q 'port' "${work}/release.log" 2>/dev/null && break; sleep 0.1; done
release_port=$(sed -n 's/.* port \([0-9]*\).*/\1/p' "${work}/release.log" | head -1)
[[ -n "${release_port}" ]] || { echo "the release server did not start" >&2; exit 1; }

# --- the API -----------------------------------------------------------------
target/debug/examples/loopback_server idempotent >"${work}/url" &
api_pid=$!
for _ in $(seq 100); do [[ -s "${work}/url" ]] && break; sleep 0.1; done
url=$(<"${work}/url")
[[ -n "${url}" ]] || { echo "the test API did not start" >&2; exit 1; }

# --- a project that includes the template ------------------------------------
project="${work}/project"
mkdir -p "${project}/templates/gitlab" "${project}/tests/gitlab"
bash scripts/stamp-gitlab-template.sh templates/gitlab/idempotent-request.yml \
  "${work}/manifest.json" scripts/install.sh "${project}/templates/gitlab/idempotent-request.yml"
cp tests/gitlab/pipeline.yml "${project}/.gitlab-ci.yml"
cp tests/gitlab/assert-outputs.sh "${project}/tests/gitlab/"
git -C "${project}" init -q
git -C "${project}" remote add origin https://gitlab.example.com/acme/app.git
git -C "${project}" add -A
git -C "${project}" -c user.name=e2e -c user.email=e2e@localhost commit -qm e2e

# The jobs' temporary directory, to see that they leave nothing in it.
job_tmp="${work}/job-tmp"
mkdir -p "${job_tmp}"

run() {
  local label="$1" attempts="$2"
  shift 2
  echo "==> gitlab-ci-local: ${label}"
  # gitlab-ci-local sets GITLAB_CI=false to mark itself; GitLab's runner
  # sets true, which is what the client detects.
  (cd "${project}" && TMPDIR="${job_tmp}" gitlab-ci-local --force-shell-executor --home "${work}/home" \
    --ignore-predefined-vars GITLAB_CI --variable GITLAB_CI=true \
    --variable "E2E_URL=${url}" \
    --variable "E2E_RELEASE_URL=http://127.0.0.1:${release_port}" \
    --variable "E2E_EXPECT_ATTEMPTS=${attempts}" \
    --variable "E2E_KEY_FILE=${work}/key" \
    "$@") 2>&1 | tee "${work}/${label}.log"
  grep -q 'PASS  check-outputs' "${work}/${label}.log" || { echo "${label}: the pipeline failed" >&2; exit 1; }
  left=$(find "${job_tmp}" -mindepth 1 -maxdepth 1)
  [[ -z "${left}" ]] || { echo "${label}: the jobs left files in their temporary directory: ${left}" >&2; exit 1; }
}

# The pipeline: the first answer is lost, the second attempt gets the replay.
run pipeline 2
grep -q "verified SHA-256 ${asset_sha}" "${work}/pipeline.log" || { echo "the binary was not verified" >&2; exit 1; }
# A retry of the job: the same pipeline id, a new CI_JOB_ID, the same key.
run retry 1 create-deployment check-outputs
grep -q 'the retried job sent the same key' "${work}/retry.log"
effects=$(curl -fsS "${url}effects")
[[ "${effects}" == 1 ]] || { echo "the API acted ${effects} times, expected once" >&2; exit 1; }
echo "GitLab template end-to-end: passed (one key, one side effect)"

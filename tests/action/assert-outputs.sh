#!/usr/bin/env bash
# Asserts the action's outputs in the end-to-end workflow. Expectations come
# from the driver (tests/action/e2e.sh) through E2E_* variables.
set -CeEuo pipefail

fail() {
  printf '::error::%s\n' "$*"
  exit 1
}
[[ "${STATUS}" == 201 ]] || fail "status: expected 201, got '${STATUS}'"
[[ "${BODY}" == '{"deployment":1}' ]] || fail "body: got '${BODY}'"
[[ "${KEY}" =~ ^[0-9a-f]{8}-[0-9a-f]{4}-8[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$ ]] ||
  fail "idempotency-key is not a UUIDv8: '${KEY}'"
[[ "${ATTEMPTS}" == "${E2E_EXPECT_ATTEMPTS:?}" ]] || fail "attempts: expected ${E2E_EXPECT_ATTEMPTS}, got '${ATTEMPTS}'"
[[ "${REPLAYED}" == true ]] || fail "replayed: expected true, got '${REPLAYED}'"
if [[ -s "${E2E_KEY_FILE:?}" ]]; then
  expected=$(<"${E2E_KEY_FILE}")
  [[ "${KEY}" == "${expected}" ]] || fail "the re-run sent key ${KEY}, the first run ${expected}"
  echo "re-run sent the same key: ${KEY}"
else
  printf '%s' "${KEY}" >"${E2E_KEY_FILE}"
fi
echo "outputs as expected: status=${STATUS} attempts=${ATTEMPTS} replayed=${REPLAYED} key=${KEY}"

#!/usr/bin/env bash
# make test: the import layers (lint-imports), up, unit + integration + e2e tests, down; then unit + integration
# again on a shifted clock (scripts/test-dates.sh: the suite must pass on any
# date). The stack is stopped whatever happens; the exit code is the tests' one
# (or up's, if it failed).
#   DIALGUARD_TEST_SUITES  the test folders (default: tests/unit tests/integration tests/e2e)
#   DIALGUARD_FAKE_AT      run on a clock shifted to this time (set by test-dates.sh)
#   DIALGUARD_TEST_SHIFTED=0  skip the shifted pass of make test
set -uo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$REPO_ROOT"

down() { "$REPO_ROOT/scripts/stack-down.sh" || log "make down failed: check 'make status'"; }
trap down EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

read -r -a suites <<<"${DIALGUARD_TEST_SUITES:-tests/unit tests/integration tests/e2e}"
# The import layers (pyproject.toml [tool.importlinter], docs/ARCHITECTURE.md)
# first: a broken layer fails the run before any service starts.
if [[ -z ${DIALGUARD_FAKE_AT:-} ]]; then
  "$VENV/bin/lint-imports" --no-cache || { log "lint-imports: an import layer is broken (docs/ARCHITECTURE.md)"; exit 1; }
fi
[[ -n ${DIALGUARD_FAKE_AT:-} ]] && fake_clock "$DIALGUARD_FAKE_AT"
start=$SECONDS
"$REPO_ROOT/scripts/stack-up.sh" || exit $?
set -a
# shellcheck disable=SC1091
source "$STACK_DIR/env"
set +a
[[ -n ${DIALGUARD_FAKE_AT:-} ]] && clock_report
# tests/unit (no services, independent tests) on DIALGUARD_TEST_WORKERS pytest-xdist
# workers (default 2: the cores of the CI machine); the integration and e2e suites
# share the stack's services and timers and run in one process after it.
unit=() rest=()
for s in "${suites[@]}"; do
  if [[ $s == tests/unit || $s == tests/unit/* ]]; then unit+=("$s"); else rest+=("$s"); fi
done
rc=5   # pytest's "no tests collected", until a run says otherwise
run_pytest() {
  local r
  # shellcheck disable=SC2086
  "$VENV/bin/python" -m pytest "$@" ${PYTEST_ARGS:-}
  r=$?
  if ((r != 5)); then ((rc == 0 || rc == 5)) && rc=$r; fi
}
((${#unit[@]})) && run_pytest -n "${DIALGUARD_TEST_WORKERS:-2}" "${unit[@]}"
((${#rest[@]})) && run_pytest "${rest[@]}"
log "tests finished with exit code $rc in $((SECONDS - start))s${DIALGUARD_FAKE_AT:+ (clock shifted to $DIALGUARD_FAKE_AT)}"
if [[ -z ${DIALGUARD_FAKE_AT:-} && ${DIALGUARD_TEST_SHIFTED:-1} != 0 ]]; then
  down
  trap - EXIT
  DIALGUARD_TEST_SUITES="tests/unit tests/integration" \
    "$REPO_ROOT/scripts/test-dates.sh" "${DIALGUARD_SHIFTED_DATE:-2028-02-29T14:00:00Z}"
  r=$?
  ((rc == 0)) && rc=$r
fi
exit $rc

#!/usr/bin/env bash
# make test: the import layers (lint-imports), up, unit + integration + e2e tests, down; then unit + integration
# again on a shifted clock (scripts/test-dates.sh: the suite must pass on any
# date). The stack is stopped whatever happens; the exit code is the tests' one
# (or up's, if it failed).
#   DIALGUARD_TEST_SUITES  the test folders (default: tests/unit tests/integration tests/e2e)
#   DIALGUARD_FAKE_AT      run on a clock shifted to this time (set by test-dates.sh)
#   DIALGUARD_TEST_SHIFTED=0  skip the shifted pass of make test
#   DIALGUARD_TEST_SHIFTED_ALONGSIDE=0  run the shifted pass after the main one, on
#     the same ports (default: alongside the main pass's e2e tests, on a stack of its
#     own at port offset DIALGUARD_SHIFTED_PORT_OFFSET, default this one + 100)
set -uo pipefail
mapfile -d '' caller_env < <(env -0)   # the shifted pass's environment: not the stack's settings
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$REPO_ROOT"

down() { "$REPO_ROOT/scripts/stack-down.sh" || log "make down failed: check 'make status'"; }
shifted_pid=
shifted_stop() {   # an interrupted run: the shifted pass stopped (its own trap takes its stack down)
  [[ -n $shifted_pid ]] || return 0
  kill -TERM -- "-$shifted_pid" 2>/dev/null || kill -TERM "$shifted_pid" 2>/dev/null
  wait "$shifted_pid" 2>/dev/null
  DIALGUARD_STACK_DIR=$REPO_ROOT/.stack/dates DIALGUARD_PORT_OFFSET=$shifted_offset \
    "$REPO_ROOT/scripts/stack-down.sh" >/dev/null 2>&1
  shifted_pid=
}
trap 'shifted_stop; down' EXIT
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
shifted_date=${DIALGUARD_SHIFTED_DATE:-2028-02-29T14:00:00Z}
shifted_offset=${DIALGUARD_SHIFTED_PORT_OFFSET:-$((PORT_OFFSET + 100))}
shifted_log=$STACK_DIR/shifted-pass.log
# shifted_ports_free: the shifted stack's ports (this stack's, moved by the offsets' difference) unused
shifted_ports_free() {
  local d=$((shifted_offset - PORT_OFFSET)) tcp=() p
  for p in "$REDIS_PORT" "$PG_PORT" "$ARI_PORT" "$AGI_PORT" "$METRICS_PORT" "$DIALER_METRICS_PORT" "$WEB_PORT"; do
    tcp+=("$((p + d))")
  done
  "$VENV/bin/python" "$PROBE" free tcp "${tcp[@]}" && "$VENV/bin/python" "$PROBE" free udp "$((SIP_PORT + d))"
}
alongside=0
if [[ -z ${DIALGUARD_FAKE_AT:-} && ${DIALGUARD_TEST_SHIFTED:-1} != 0 && ${DIALGUARD_TEST_SHIFTED_ALONGSIDE:-1} != 0 ]] &&
  ! shifted_ports_free; then
  log "the shifted pass runs after this one: the ports of offset $shifted_offset are in use (DIALGUARD_SHIFTED_PORT_OFFSET)"
elif [[ -z ${DIALGUARD_FAKE_AT:-} && ${DIALGUARD_TEST_SHIFTED:-1} != 0 && ${DIALGUARD_TEST_SHIFTED_ALONGSIDE:-1} != 0 ]]; then
  alongside=1
  # The shifted pass (unit + integration on its own stack: .stack/dates, other ports)
  # waits for the main pass's first e2e test (tests/conftest.py touches the file):
  # the e2e tests mostly wait on calls and timers, the main integration tests would
  # compete with it for the two cores. Without e2e tests it starts when the main pass ends.
  export DIALGUARD_E2E_STARTED_FILE=$STACK_DIR/e2e-started
  rm -f "$DIALGUARD_E2E_STARTED_FILE"
  (
    while [[ ! -e $DIALGUARD_E2E_STARTED_FILE ]]; do sleep 1; done
    exec env -i "${caller_env[@]}" DIALGUARD_PORT_OFFSET="$shifted_offset" DIALGUARD_DATES_ALONGSIDE=1 \
      DIALGUARD_TEST_SUITES="tests/unit tests/integration" setsid "$REPO_ROOT/scripts/test-dates.sh" "$shifted_date"
  ) >"$shifted_log" 2>&1 </dev/null &
  shifted_pid=$!
fi
((${#unit[@]})) && run_pytest -n "${DIALGUARD_TEST_WORKERS:-2}" "${unit[@]}"
# the slowest tests listed at the end of every run: what to look at when `make test`
# nears the 20 minutes the project keeps it under
((${#rest[@]})) && run_pytest --durations=12 --durations-min=8 "${rest[@]}"
log "tests finished with exit code $rc in $((SECONDS - start))s${DIALGUARD_FAKE_AT:+ (clock shifted to $DIALGUARD_FAKE_AT)}"
if [[ -z ${DIALGUARD_FAKE_AT:-} && ${DIALGUARD_TEST_SHIFTED:-1} != 0 ]]; then
  down
  trap shifted_stop EXIT
  if ((alongside)); then
    [[ -e $DIALGUARD_E2E_STARTED_FILE ]] || log "shifted pass (clock at $shifted_date) starts now (no e2e test ran)"
    touch "$DIALGUARD_E2E_STARTED_FILE"
    log "waiting for the shifted pass (clock at $shifted_date, port offset $shifted_offset); its output follows"
    wait "$shifted_pid"
    r=$?
    shifted_pid=
    cat "$shifted_log" >&2
  else
    trap - EXIT
    DIALGUARD_TEST_SUITES="tests/unit tests/integration" \
      "$REPO_ROOT/scripts/test-dates.sh" "$shifted_date"
    r=$?
  fi
  ((rc == 0)) && rc=$r
  log "make test: exit code $rc in $((SECONDS - start))s"
fi
exit $rc

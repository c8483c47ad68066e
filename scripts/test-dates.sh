#!/usr/bin/env bash
# make test-dates: the test suite on other dates. For each date, a stack of its
# own (.stack/dates/) whose Redis, PostgreSQL, guard services and test processes
# see the wall clock shifted to that date (libfaketime, lib.sh fake_clock), then
# the suites, then down. Asterisk and SIPp keep the real clock.
#   scripts/test-dates.sh [ISO_TIME...]   default: DIALGUARD_TEST_DATES or
#     2028-02-29T14:00:00Z (a 29 February, 22:00 in Shanghai: after calling hours)
#     2031-07-14T01:30:00Z (a Monday morning in a year no calendar package knows)
#   DIALGUARD_TEST_SUITES  the test folders (default: all three)
#   DIALGUARD_DATES_ALONGSIDE=1  leave the usual stack up (the shifted one has other ports)
set -uo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$REPO_ROOT"

if (($# == 0)); then
  read -r -a dates <<<"${DIALGUARD_TEST_DATES:-2028-02-29T14:00:00Z 2031-07-14T01:30:00Z}"
else
  dates=("$@")
fi
[[ -n $FAKETIME_LIB && -f $FAKETIME_LIB ]] || die "libfaketime not found: run 'make setup' (Debian package faketime)"
# The usual stack holds the ports; the shifted stacks use them in turn. Under make
# test (scripts/run-tests.sh) the shifted stack has ports of its own
# (DIALGUARD_DATES_ALONGSIDE=1): the usual stack runs the main pass meanwhile.
if [[ ${DIALGUARD_DATES_ALONGSIDE:-0} != 1 ]]; then
  "$REPO_ROOT/scripts/stack-down.sh" || die "make down failed: check 'make status'"
fi
export DIALGUARD_ASTERISK_ROOT=$ASTERISK_ROOT   # the cached root, not one under .stack/dates
shifted=$REPO_ROOT/.stack/dates
rc=0 summary=()
for at in "${dates[@]}"; do
  date -u -d "$at" >/dev/null 2>&1 || die "not a time: $at (e.g. 2028-02-29T14:00:00Z)"
  DIALGUARD_STACK_DIR=$shifted "$REPO_ROOT/scripts/stack-down.sh" >/dev/null 2>&1
  rm -rf --one-file-system "$shifted"   # a fresh cluster and Redis for each date
  start=$SECONDS
  log "=== tests with the clock at $at (${DIALGUARD_TEST_SUITES:-all suites}) ==="
  DIALGUARD_STACK_DIR=$shifted DIALGUARD_FAKE_AT=$at "$REPO_ROOT/scripts/run-tests.sh"
  r=$?
  summary+=("$at: exit $r, $((SECONDS - start))s")
  ((r == 0)) || rc=$r
done
((rc == 0)) && rm -rf --one-file-system "$shifted"   # kept on failure: logs under .stack/dates/
for s in "${summary[@]}"; do log "test-dates $s"; done
exit $rc

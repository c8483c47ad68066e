#!/usr/bin/env bash
# make test-ha: the Redis failover tests (tests/ha) on a DIALGUARD_REDIS_HA=1
# stack: a primary, two replicas, three Sentinels, the guard with
# DIALGUARD_REDIS_WAIT_REPLICAS=1. Up, tests, down; the exit code is the tests'.
set -uo pipefail
export DIALGUARD_REDIS_HA=1
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$REPO_ROOT"

if [[ -f $STACK_DIR/env ]] && ! grep -q '^export DIALGUARD_REDIS_HA=1$' "$STACK_DIR/env" &&
   pid_alive "$STACK_DIR/redis/redis.pid" redis-server; then
  die "a stack without DIALGUARD_REDIS_HA=1 runs in this checkout: 'make down' first"
fi
down() { "$REPO_ROOT/scripts/stack-down.sh" || log "make down failed: check 'make status'"; }
trap down EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

start=$SECONDS
"$REPO_ROOT/scripts/stack-up.sh" || exit $?
set -a
# shellcheck disable=SC1091
source "$STACK_DIR/env"
set +a
# -s: the tests print the measured refusal window and recovery time.
# shellcheck disable=SC2086
"$VENV/bin/python" -m pytest -s ${PYTEST_ARGS:-} tests/ha
rc=$?
log "HA tests finished with exit code $rc in $((SECONDS - start))s"
exit $rc

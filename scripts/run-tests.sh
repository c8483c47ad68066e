#!/usr/bin/env bash
# make test: up, unit + integration + e2e tests, down. The stack is stopped
# whatever happens; the exit code is the tests' one (or up's, if it failed).
set -uo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$REPO_ROOT"

down() { "$REPO_ROOT/scripts/stack-down.sh" || log "make down failed: check 'make status'"; }
trap down EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

"$REPO_ROOT/scripts/stack-up.sh" || exit $?
set -a
# shellcheck disable=SC1091
source "$STACK_DIR/env"
set +a
# shellcheck disable=SC2086
"$VENV/bin/python" -m pytest ${PYTEST_ARGS:-} tests/unit tests/integration tests/e2e
rc=$?
log "tests finished with exit code $rc"
exit $rc

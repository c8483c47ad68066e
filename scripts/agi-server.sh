#!/usr/bin/env bash
# Start, stop or restart only the stack's FastAGI server (dialguard-agi-server),
# e.g. after editing agi/ or to test what Asterisk does without the guard.
#   scripts/agi-server.sh start|stop|restart|status
# Same settings as `make up` (AGI_SERVER_ENV in lib.sh: dev-stack test clock,
# DIALGUARD_RULES default cn-default); pid and log in .stack/services/agi.*.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
if [[ -f $STACK_DIR/env ]]; then
  # shellcheck disable=SC1091
  source "$STACK_DIR/env"
  source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
fi
stack_lock
[[ -f $STACK_DIR/env ]] || die "the stack is not up (no $STACK_DIR/env): run 'make up'"
agi_server_available || die "no FastAGI server in $VENV: run 'make setup'"

case ${1:-} in
  start) agi_server_start ;;
  stop) agi_server_stop; log "FastAGI server stopped" ;;
  restart) agi_server_stop; agi_server_start ;;
  status)
    if pid_alive "$STACK_DIR/services/agi.pid" dialguard-agi-server; then
      echo "up (pid $(pid_of "$STACK_DIR/services/agi.pid"))"
    else
      echo down; exit 1
    fi ;;
  *) die "usage: $0 start|stop|restart|status" ;;
esac

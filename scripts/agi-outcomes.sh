#!/usr/bin/env bash
# Start, stop or restart only the stack's outcome reader (dialguard-agi-outcomes,
# agi/outcomes.py): call outcomes from Asterisk's CEL file to the guard.
#   scripts/agi-outcomes.sh start|stop|restart|status
# Same settings as `make up` (OUTCOMES_ENV in lib.sh); pid, log and saved
# offset in .stack/services/outcomes.*.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
if [[ -f $STACK_DIR/env ]]; then
  # shellcheck disable=SC1091
  source "$STACK_DIR/env"
  source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
fi
stack_lock
[[ -f $STACK_DIR/env ]] || die "the stack is not up (no $STACK_DIR/env): run 'make up'"
outcomes_available || die "no dialguard-agi-outcomes in $VENV: run 'make setup'"

case ${1:-} in
  start) outcomes_start ;;
  stop) outcomes_stop; log "outcome reader stopped" ;;
  restart) outcomes_stop; outcomes_start ;;
  status)
    if pid_alive "$STACK_DIR/services/outcomes.pid" dialguard-agi-outcomes; then
      echo "up (pid $(pid_of "$STACK_DIR/services/outcomes.pid"))"
    else
      echo down; exit 1
    fi ;;
  *) die "usage: $0 start|stop|restart|status" ;;
esac

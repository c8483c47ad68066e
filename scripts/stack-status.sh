#!/usr/bin/env bash
# make status: which parts of this checkout's stack run, and where their logs are.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
if [[ -f $STACK_DIR/env ]]; then
  # shellcheck disable=SC1091
  source "$STACK_DIR/env"
  source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
fi
show() { # NAME PIDFILE WORD LOG
  if pid_alive "$2" "$3"; then state="up (pid $(pid_of "$2"))"; else state=down; fi
  printf '%-14s %-18s %s\n' "$1" "$state" "$4"
}
show Redis "$STACK_DIR/redis/redis.pid" redis-server "$STACK_DIR/redis/redis.log"
for d in redis-replica redis-replica2; do
  [[ -e $STACK_DIR/$d/redis.pid ]] && show "Redis $d" "$STACK_DIR/$d/redis.pid" redis-server "$STACK_DIR/$d/redis.log"
done
for f in "$STACK_DIR"/sentinel-*/sentinel.pid; do
  [[ -e $f ]] && show "$(basename "$(dirname "$f")")" "$f" redis-server "${f%.pid}.log"
done
show PostgreSQL "$STACK_DIR/pg/data/postmaster.pid" postgres "$STACK_DIR/pg/postgresql.log"
show Asterisk "$AST_PIDFILE" asterisk "$AST_HOST_DIR/log/messages.log"
for f in "$STACK_DIR"/services/*.pid; do
  [[ -e $f ]] && show "$(basename "$f" .pid)" "$f" "" "${f%.pid}.log"
done
for f in "$STACK_DIR"/sipp/*.pid; do
  [[ -e $f ]] && show "SIPp $(basename "$f" .pid)" "$f" sipp "(left by a test or the demo: make down stops it)"
done
if [[ $ASTERISK_MODE != system ]] && mountpoint -q "$ASTERISK_ROOT/proc" 2>/dev/null; then
  echo "note: $ASTERISK_ROOT/proc is mounted on the host ('make down' unmounts it)"
fi
[[ -f $STACK_DIR/env ]] && echo "settings: $STACK_DIR/env"
exit 0

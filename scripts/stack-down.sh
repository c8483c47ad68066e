#!/usr/bin/env bash
# make down: stop what `make up` (and the test harness) started in this
# checkout, by pid file; leave no process and no mount behind.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

stack_lock
if [[ -f $STACK_DIR/env ]]; then
  # shellcheck disable=SC1091
  source "$STACK_DIR/env"
  source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
fi

# SIPp runs left by an interrupted test or demo (tests/e2e/sipp.py writes these).
for f in "$STACK_DIR"/sipp/*.pid; do
  [[ -e $f ]] || continue
  stop_pid "$f" sipp 5
  log "stopped SIPp $(basename "$f" .pid)"
done

# The campaign dialer first: no new call while the rest goes down.
if [[ -e $STACK_DIR/services/dialer.pid ]]; then
  dialer_stop
  log "stopped dialer"
fi

# dialguard services.
for f in "$STACK_DIR"/services/*.pid; do
  [[ -e $f ]] || continue
  stop_pid "$f" dialguard 15
  log "stopped $(basename "$f" .pid)"
done

# Asterisk: ask it to stop, then make sure.
if pid_alive "$AST_PIDFILE" asterisk; then
  DIALGUARD_AST_RX_TIMEOUT=10 ast_rx "core stop now" >/dev/null 2>&1 || true
  stop_pid "$AST_PIDFILE" asterisk 15
  log "stopped Asterisk"
fi
rm -f "$AST_PIDFILE"
# The chroot's /proc is mounted in Asterisk's own namespace and goes with it;
# a mount left on the host by hand or by an older stack is removed here.
if [[ $ASTERISK_MODE != system ]] && mountpoint -q "$ASTERISK_ROOT/proc" 2>/dev/null; then
  umount "$ASTERISK_ROOT/proc" 2>/dev/null || umount -l "$ASTERISK_ROOT/proc" || log "could not unmount $ASTERISK_ROOT/proc"
fi

# PostgreSQL: stop_pg DATA_DIR MODE -> 0 when it was running and is stopped.
stop_pg() {
  local data=$1 mode=$2 as=()
  pid_alive "$data/postmaster.pid" postgres || return 1
  [[ $EUID -eq 0 ]] && as=(runuser -u postgres --)
  "${as[@]}" "$PG_BIN/pg_ctl" -D "$data" -m "$mode" -w -t 30 stop >/dev/null 2>&1 ||
    stop_pid "$data/postmaster.pid" postgres 10
}
stop_pg "$STACK_DIR/pg/data" fast && log "stopped PostgreSQL"

# PostgreSQL clusters the tests made for themselves (tests/fakes/pg.py
# registers each one): an interrupted test run cannot stop them itself.
registry=$STACK_DIR/test-clusters
if [[ -f $registry ]]; then
  while IFS= read -r dir; do
    [[ -n $dir && -d $dir && $dir == */dg-audit-pg-* ]] || continue
    stop_pg "$dir/data" immediate && log "stopped a test PostgreSQL cluster left by an interrupted run ($dir)"
    rm -rf "$dir"
  done < "$registry"
  rm -f "$registry"
fi

# Sentinels first (DIALGUARD_REDIS_HA=1), so that stopping the primary starts no failover.
for f in "$STACK_DIR"/sentinel-*/sentinel.pid; do
  [[ -e $f ]] || continue
  stop_pid "$f" redis-server 10
  log "stopped Sentinel $(basename "$(dirname "$f")")"
done
# Redis nodes (SIGTERM: each flushes its AOF and exits).
for d in redis redis-replica redis-replica2; do
  if pid_alive "$STACK_DIR/$d/redis.pid" redis-server; then
    stop_pid "$STACK_DIR/$d/redis.pid" redis-server 20
    log "stopped Redis ($d)"
  fi
  rm -f "$STACK_DIR/$d/redis.pid"
done
rm -f "$STACK_DIR/env"
log "stack down"

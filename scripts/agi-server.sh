#!/usr/bin/env bash
# Start, stop or restart only the stack's FastAGI server (dialguard-agi-server),
# e.g. after editing agi/ or to test what Asterisk does without the guard.
#   scripts/agi-server.sh start|stop|restart|status
# Same settings as `make up` (AGI_SERVER_ENV in lib.sh: dev-stack test clock,
# DIALGUARD_RULES default cn-default); pid and log in .stack/services/agi.*.
# It serves /metrics and /healthz on 127.0.0.1:$METRICS_PORT (DIALGUARD_METRICS_PORT,
# 19100 + DIALGUARD_PORT_OFFSET); `status` shows what /healthz says.
# DIALGUARD_AGI_WORKERS=N: N server processes on the port; the pid file holds
# their parent (stop signals its process group: the workers stop with it).
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

metrics_note() {
  log "FastAGI metrics: http://127.0.0.1:$METRICS_PORT/metrics, health: http://127.0.0.1:$METRICS_PORT/healthz"
}

case ${1:-} in
  start) agi_server_start; metrics_note ;;
  stop) agi_server_stop; log "FastAGI server stopped" ;;
  restart) agi_server_stop; agi_server_start; metrics_note ;;
  status)
    if pid_alive "$STACK_DIR/services/agi.pid" dialguard-agi-server; then
      pid=$(pid_of "$STACK_DIR/services/agi.pid")
      workers=$(pgrep -P "$pid" -d, -f agi.server || true)
      echo "up (pid $pid${workers:+, workers $workers})"
      # /healthz: 200 when it accepts sessions and Redis answers, else 503 and why
      "$VENV/bin/python" - "$METRICS_PORT" <<'PY' || true
import sys, urllib.error, urllib.request
url = f"http://127.0.0.1:{sys.argv[1]}/healthz"
try:
    with urllib.request.urlopen(url, timeout=3) as r:
        print(f"healthz {r.status}: {r.read().decode()}")
except urllib.error.HTTPError as e:
    print(f"healthz {e.code}: {e.read().decode()}")
except OSError as e:
    print(f"healthz: no answer on {url} ({e})")
PY
    else
      echo down; exit 1
    fi ;;
  *) die "usage: $0 start|stop|restart|status" ;;
esac

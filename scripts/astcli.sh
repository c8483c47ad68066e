#!/usr/bin/env bash
# Asterisk CLI of this checkout's stack.
#   scripts/astcli.sh                   interactive console (make asterisk-cli)
#   scripts/astcli.sh "pjsip show endpoints"   one command
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
if [[ -f $STACK_DIR/env ]]; then
  # shellcheck disable=SC1091
  source "$STACK_DIR/env"
  source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
fi
pid_alive "$AST_PIDFILE" asterisk || die "Asterisk of this checkout is not running: run 'make up'"
if (($#)); then
  ast_rx "$*"
elif [[ $ASTERISK_MODE == system ]]; then
  exec "$ASTERISK_BIN" -C "$AST_DIR/etc/asterisk.conf" -r
else
  exec nsenter -t "$(pid_of "$AST_PIDFILE")" -m -- chroot "$ASTERISK_ROOT" "$ASTERISK_BIN" -C "$AST_DIR/etc/asterisk.conf" -r
fi

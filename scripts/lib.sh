# shellcheck shell=bash
# Shared settings for the dev stack scripts: paths, ports, helpers.
# Sourced by scripts/*.sh; every value can be overridden from the environment.

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
STACK_DIR=${DIALGUARD_STACK_DIR:-$REPO_ROOT/.stack}

# Ports (docs/PORTS.md). DIALGUARD_PORT_OFFSET shifts every default at once, so a
# second checkout can run its own stack next to the first one.
PORT_OFFSET=${DIALGUARD_PORT_OFFSET:-0}
REDIS_PORT=${DIALGUARD_REDIS_PORT:-$((16379 + PORT_OFFSET))}
PG_PORT=${DIALGUARD_PG_PORT:-$((15432 + PORT_OFFSET))}
SIP_PORT=${DIALGUARD_SIP_PORT:-$((15060 + PORT_OFFSET))}
ARI_PORT=${DIALGUARD_ARI_PORT:-$((18088 + PORT_OFFSET))}
AGI_PORT=${DIALGUARD_AGI_PORT:-$((14573 + PORT_OFFSET))}
CARRIER_PORT=${DIALGUARD_CARRIER_PORT:-$((15070 + PORT_OFFSET))}
AGENTS_PORT=${DIALGUARD_AGENTS_PORT:-$((15080 + PORT_OFFSET))}
METRICS_PORT=${DIALGUARD_METRICS_PORT:-$((19100 + PORT_OFFSET))}
DIALER_METRICS_PORT=${DIALGUARD_DIALER_METRICS_PORT:-$((19101 + PORT_OFFSET))}
WEB_PORT=${DIALGUARD_WEB_PORT:-$((19102 + PORT_OFFSET))}
# Asterisk RTP range: 2000 ports; offsets in steps of 100 give disjoint ranges.
RTP_START=${DIALGUARD_RTP_START:-$((20000 + PORT_OFFSET * 20))}
RTP_END=${DIALGUARD_RTP_END:-$((RTP_START + 1999))}

ARI_USER=${DIALGUARD_ARI_USER:-dialguard}
ARI_PASSWORD=${DIALGUARD_ARI_PASSWORD:-dialguard-dev}

# Asterisk: "chroot" (default: Asterisk 22 from a cached Debian sid root) or
# "system" (the host's own asterisk binary, no chroot).
ASTERISK_MODE=${DIALGUARD_ASTERISK:-chroot}
ASTERISK_ROOT=${DIALGUARD_ASTERISK_ROOT:-$STACK_DIR/cache/asterisk-root}
DEBIAN_MIRROR=${DIALGUARD_DEBIAN_MIRROR:-http://deb.debian.org/debian}

REDIS_URL=${DIALGUARD_REDIS_URL:-redis://127.0.0.1:$REDIS_PORT/0}
# DIALGUARD_REDIS_HA=1: a primary ($REDIS_PORT), two replicas and three Sentinels
# watching them (docs/OPERATIONS.md, "Redis high availability"); every component
# then finds the primary through the Sentinels (DIALGUARD_REDIS_SENTINELS).
# DIALGUARD_REDIS_URL still gives the credentials and database. Two replicas: after
# a failover the new primary still has one to acknowledge ALLOWs
# (DIALGUARD_REDIS_WAIT_REPLICAS=1) while the lost node is away.
REDIS_HA=${DIALGUARD_REDIS_HA:-0}
REDIS_REPLICA_PORT=${DIALGUARD_REDIS_REPLICA_PORT:-$((REDIS_PORT + 2))}
REDIS_REPLICA2_PORT=${DIALGUARD_REDIS_REPLICA2_PORT:-$((REDIS_PORT + 4))}
SENTINEL_PORT=${DIALGUARD_SENTINEL_PORT:-$((26381 + PORT_OFFSET))}
SENTINEL_PORTS=("$SENTINEL_PORT" "$((SENTINEL_PORT + 1))" "$((SENTINEL_PORT + 2))")
REDIS_MASTER=${DIALGUARD_REDIS_MASTER:-dialguard}
if [[ $REDIS_HA == 1 ]]; then
  REDIS_SENTINELS=127.0.0.1:${SENTINEL_PORTS[0]},127.0.0.1:${SENTINEL_PORTS[1]},127.0.0.1:${SENTINEL_PORTS[2]}
else
  REDIS_SENTINELS=
fi
PG_DSN=${DIALGUARD_PG_DSN:-postgresql://dialguard@127.0.0.1:$PG_PORT/dialguard}
# The cluster's superuser (trust on loopback in the dev stack): schema migrations only.
PG_ADMIN_DSN=${DIALGUARD_PG_ADMIN_DSN:-postgresql://postgres@127.0.0.1:$PG_PORT/dialguard}
# Local audit spool (dialguard/audit/spool.py): guard processes append, audit-ship drains it.
SPOOL_DIR=${DIALGUARD_SPOOL_DIR:-$STACK_DIR/spool}

# Generated secrets (scripts/stack-up.sh runs `dialguard init` into it).
SECRETS_DIR=$STACK_DIR/secrets

# Redis also listens on a Unix socket in its folder (unixsocketperm 700: this
# user's processes only; the ACL users and passwords apply there as on TCP).
# A socket path is at most 107 bytes (DIALGUARD_REDIS_SOCKET sets another).
REDIS_SOCKET=${DIALGUARD_REDIS_SOCKET:-$STACK_DIR/redis/redis.sock}
# (a checkout too deep for that: a path of the port's own in /tmp, so make up works from any folder)
((${#REDIS_SOCKET} <= 107)) || [[ -n ${DIALGUARD_REDIS_SOCKET:-} ]] || REDIS_SOCKET=/tmp/dialguard-redis-$REDIS_PORT.sock
# DIALGUARD_REDIS_TRANSPORT: how the stack's services (FastAGI server, outcome
# reader, dialer, audit shipper, console) reach the single Redis on this host:
# unix (its socket) or tcp (127.0.0.1:$REDIS_PORT). Redis HA is TCP only (the
# Sentinels name a primary by host and port). The operator's and the tests' URL
# (DIALGUARD_REDIS_URL in .stack/env) stays TCP; DIALGUARD_REDIS_SOCKET is there too.
if [[ $REDIS_HA == 1 ]]; then
  [[ ${DIALGUARD_REDIS_TRANSPORT:-tcp} == tcp ]] || { echo "DIALGUARD_REDIS_TRANSPORT=unix is for a single Redis, not DIALGUARD_REDIS_HA=1" >&2; exit 1; }
  REDIS_TRANSPORT=tcp
else
  REDIS_TRANSPORT=${DIALGUARD_REDIS_TRANSPORT:-tcp}
fi
[[ $REDIS_TRANSPORT == tcp || $REDIS_TRANSPORT == unix ]] || { echo "DIALGUARD_REDIS_TRANSPORT must be tcp or unix, not '$REDIS_TRANSPORT'" >&2; exit 1; }

# role_url ROLE [tcp|unix]: the Redis URL of ROLE's ACL user (guard, dialer, shipper, admin, web),
# over TCP (the default) or the Unix socket (unix://user:password@/path/redis.sock?db=0).
role_url() {
  local DIALGUARD_REDIS_USER DIALGUARD_REDIS_PASSWORD
  # shellcheck disable=SC1090
  source "$SECRETS_DIR/redis-$1.env"
  if [[ ${2:-tcp} == unix ]]; then
    printf 'unix://%s:%s@%s?db=0' "$DIALGUARD_REDIS_USER" "$DIALGUARD_REDIS_PASSWORD" "$REDIS_SOCKET"
  else
    printf 'redis://%s:%s@127.0.0.1:%s/0' "$DIALGUARD_REDIS_USER" "$DIALGUARD_REDIS_PASSWORD" "$REDIS_PORT"
  fi
}

# service_url ROLE: ROLE's URL over the services' transport (DIALGUARD_REDIS_TRANSPORT).
service_url() { role_url "$1" "$REDIS_TRANSPORT"; }

# DIALGUARD_VENV: another venv of this checkout for the services a script (re)starts,
# e.g. the FastAGI server on another Python for an A/B (docs/BENCHMARKS.md, stop 24)
VENV=${DIALGUARD_VENV:-$REPO_ROOT/.venv}
PROBE=$REPO_ROOT/scripts/probe.py

# Asterisk's runtime folder (config, run, logs, spool, astdb): $AST_HOST_DIR on
# the host; in the chroot it is bind-mounted at /dialguard (private mount
# namespace, so nothing stays mounted when Asterisk exits).
AST_HOST_DIR=$STACK_DIR/asterisk
if [[ $ASTERISK_MODE == system ]]; then
  AST_DIR=$AST_HOST_DIR
  ASTERISK_BIN=${DIALGUARD_ASTERISK_BIN:-$(command -v asterisk || echo /usr/sbin/asterisk)}
else
  AST_DIR=/dialguard
  ASTERISK_BIN=/usr/sbin/asterisk
fi
AST_PIDFILE=$AST_HOST_DIR/asterisk.pid
PG_BIN=${DIALGUARD_PG_BIN:-$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)}

log() { printf '[dialguard] %s\n' "$*" >&2; }
die() { printf '[dialguard] ERROR: %s\n' "$*" >&2; exit 1; }

# fail_part PART LOGFILE MESSAGE: stop `make up` naming the part and its log.
fail_part() {
  log "$1: $3; last lines of $2:"
  tail -n 20 "$2" >&2 2>/dev/null || true
  die "$1 is not up (log: $2)"
}

# wait_for PART LOGFILE TIMEOUT_S PIDFILE|- CMD...: retry CMD until it succeeds;
# give up early if the process in PIDFILE has died.
wait_for() {
  local what=$1 logf=$2 timeout=$3 pidf=$4; shift 4
  local deadline=$((SECONDS + timeout))
  until "$@" >/dev/null 2>&1; do
    if [[ $pidf != - ]] && ! pid_alive "$pidf"; then
      fail_part "$what" "$logf" "the process exited"
    fi
    ((SECONDS < deadline)) || fail_part "$what" "$logf" "no answer within ${timeout}s"
    sleep 0.2
  done
}

# pid_of PIDFILE: the pid on the file's first line (postmaster.pid has more lines).
pid_of() {
  local pid
  [[ -s $1 ]] || return 1
  read -r pid <"$1" || true
  [[ $pid =~ ^[0-9]+$ ]] && printf '%s' "$pid"
}

# pid_alive PIDFILE [CMDLINE_WORD]: the pid file names a live process (whose
# command line contains CMDLINE_WORD, to ignore a recycled pid).
pid_alive() {
  local pid
  pid=$(pid_of "$1") || return 1
  kill -0 "$pid" 2>/dev/null || return 1
  [[ -z ${2:-} ]] || tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q -- "$2"
}

# stop_pid PIDFILE CMDLINE_WORD [TIMEOUT_S]: TERM the process group the pid
# leads (or the pid alone), wait, then KILL; remove the pid file.
stop_pid() {
  local pidf=$1 word=$2 timeout=${3:-10} pid i
  if pid_alive "$pidf" "$word"; then
    pid=$(pid_of "$pidf")
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < timeout * 10; i++)); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
      log "$word (pid $pid) did not stop in ${timeout}s: killing it"
      kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
    fi
  fi
  rm -f "$pidf"
}

# ast_rx COMMAND: run an Asterisk CLI command against the stack's Asterisk
# (at most DIALGUARD_AST_RX_TIMEOUT seconds, default 30).
ast_rx() {
  local t=${DIALGUARD_AST_RX_TIMEOUT:-30}
  if [[ $ASTERISK_MODE == system ]]; then
    no_fake timeout "$t" "$ASTERISK_BIN" -C "$AST_DIR/etc/asterisk.conf" -rx "$1"
  else
    local pid
    pid=$(pid_of "$AST_PIDFILE") || return 1
    # The runtime folder is only mounted in Asterisk's own mount namespace.
    no_fake timeout "$t" nsenter -t "$pid" -m -- chroot "$ASTERISK_ROOT" "$ASTERISK_BIN" \
      -C "$AST_DIR/etc/asterisk.conf" -rx "$1"
  fi
}

# Take the stack lock (fd 8) so concurrent up/down of one checkout do not race.
# Daemons must be started with 8>&- so they do not keep holding it.
stack_lock() {
  umask 077   # what the stack writes is for its owner only (issue 13)
  mkdir -p "$STACK_DIR"
  chmod 0711 "$STACK_DIR"   # the postgres OS user must traverse it to its cluster
  exec 8>"$STACK_DIR/.lock"
  flock -w 900 8 || die "another make up/down holds $STACK_DIR/.lock"
}

# --- dialguard services (FastAGI server, audit shipper) ---------------------------
# start_service NAME [VAR=VALUE...] -- CMD...: run CMD detached in its own
# session with the stack's settings (.stack/env) and the VAR=VALUE given; pid
# in .stack/services/NAME.pid, output appended to .stack/services/NAME.log.
# Does nothing if NAME already runs.
start_service() {
  local name=$1; shift
  local d=$STACK_DIR/services vars=()
  while (($#)) && [[ $1 != -- ]]; do vars+=("$1"); shift; done
  [[ ${1:-} == -- ]] && shift
  mkdir -p "$d"
  pid_alive "$d/$name.pid" "$(basename "$1")" && return 0
  (
    set -a
    # shellcheck disable=SC1091
    source "$STACK_DIR/env"
    set +a
    ((${#vars[@]} == 0)) || export "${vars[@]}"
    cd "$REPO_ROOT"
    exec setsid "$@" >>"$d/$name.log" 2>&1 </dev/null 8>&-
  ) &
  echo $! >"$d/$name.pid"
}

# The dev stack's guard settings for the FastAGI server:
# - DIALGUARD_RULES: the default rule packs (campaigns may carry their own);
# - DIALGUARD_TEST_CLOCK=1: the engine reads the rules clock from the Redis key
#   <prefix>:{g}:clock (ms since the epoch) when it is set, so tests and the
#   demo can place calls "on a working day at 10:00". DEV STACK ONLY: a
#   production server never sets DIALGUARD_TEST_CLOCK (anyone who can write to
#   Redis could then move the guard's clock).
AGI_RULES=${DIALGUARD_RULES:-cn-default}
# DIALGUARD_STACK_TEST_CLOCK=0 (bench/cps.py): the real clock, as in production.
AGI_SERVER_ENV=("DIALGUARD_TEST_CLOCK=${DIALGUARD_STACK_TEST_CLOCK:-1}" "DIALGUARD_RULES=$AGI_RULES" "DIALGUARD_KEY_PREFIX=${DIALGUARD_KEY_PREFIX:-dg}")

agi_server_available() {
  [[ -x $VENV/bin/dialguard-agi-server ]] && "$VENV/bin/python" -c 'import agi.server' >/dev/null 2>&1
}

# service_env_ok NAME VAR=VALUE...: the running service NAME has every VAR=VALUE in its environment.
service_env_ok() {
  local pid var environ
  pid=$(pid_of "$STACK_DIR/services/$1.pid") || return 1
  shift
  environ=$(tr '\0' '\n' <"/proc/$pid/environ" 2>/dev/null) || return 1
  for var in "$@"; do
    grep -qxF -- "$var" <<<"$environ" || return 1
  done
}

# restart_if_changed NAME CMDLINE_WORD TIMEOUT_S VAR=VALUE...: stop the running
# service NAME when its environment lacks one of VAR=VALUE (an older `make up`,
# another DIALGUARD_REDIS_TRANSPORT); its start function then starts it anew.
restart_if_changed() {
  local name=$1 word=$2 t=$3; shift 3
  if pid_alive "$STACK_DIR/services/$name.pid" "$word" && ! service_env_ok "$name" "$@"; then
    log "$name runs with other settings (Redis transport now $REDIS_TRANSPORT): restarting it"
    stop_pid "$STACK_DIR/services/$name.pid" "$word" "$t"
  fi
}

# agi_server_settings_ok: the running server has the settings AGI_SERVER_ENV asks for
# and the Redis URL of the services' transport.
agi_server_settings_ok() {
  service_env_ok agi "${AGI_SERVER_ENV[@]}" "DIALGUARD_REDIS_URL=$(service_url guard)"
}

# agi_server_start: start the FastAGI server (if not running) and wait for its
# port. A server started with other settings (an older `make up`) is restarted.
agi_server_start() {
  local d=$STACK_DIR/services
  if pid_alive "$d/agi.pid" dialguard-agi-server && ! agi_server_settings_ok; then
    log "FastAGI server runs with other settings than ${AGI_SERVER_ENV[*]} (Redis over $REDIS_TRANSPORT): restarting it"
    agi_server_stop
  fi
  pid_alive "$d/agi.pid" dialguard-agi-server || "$VENV/bin/python" "$PROBE" free tcp "$AGI_PORT" ||
    die "FastAGI server: port $AGI_PORT busy. Another stack (another checkout?) or service uses it; set DIALGUARD_PORT_OFFSET=100 or DIALGUARD_AGI_PORT (docs/PORTS.md)"
  start_service agi "${AGI_SERVER_ENV[@]}" "DIALGUARD_REDIS_URL=$(service_url guard)" -- "$VENV/bin/dialguard-agi-server"
  wait_for "FastAGI server (127.0.0.1:$AGI_PORT)" "$d/agi.log" 30 "$d/agi.pid" \
    "$VENV/bin/python" "$PROBE" tcp "$AGI_PORT"
  log "FastAGI server up on 127.0.0.1:$AGI_PORT, rules $AGI_RULES, test clock $( [[ ${DIALGUARD_STACK_TEST_CLOCK:-1} == 1 ]] && echo on || echo off) (log: $d/agi.log)"
}

# agi_server_stop: SIGTERM (sessions in flight finish), then make sure.
agi_server_stop() {
  stop_pid "$STACK_DIR/services/agi.pid" dialguard-agi-server 10
}

# --- the outcome reader (dialguard-agi-outcomes, agi/outcomes.py) -------------------
# Reads the guard's call outcomes from Asterisk's CEL file (one CELGenUserEvent
# per allowed call at hangup) and applies them; its offset survives restarts.
OUTCOMES_ENV=("${AGI_SERVER_ENV[@]}" "DIALGUARD_OUTCOMES_FILE=$AST_HOST_DIR/log/cel-custom/dialguard-outcomes.csv"
              "DIALGUARD_OUTCOMES_STATE=$STACK_DIR/services/outcomes.offset")

outcomes_available() {
  [[ -x $VENV/bin/dialguard-agi-outcomes ]]
}

outcomes_start() {
  local d=$STACK_DIR/services
  restart_if_changed outcomes dialguard-agi-outcomes 10 "${OUTCOMES_ENV[@]}" "DIALGUARD_REDIS_URL=$(service_url guard)"
  start_service outcomes "${OUTCOMES_ENV[@]}" "DIALGUARD_REDIS_URL=$(service_url guard)" -- "$VENV/bin/dialguard-agi-outcomes"
  sleep 0.5
  pid_alive "$d/outcomes.pid" dialguard-agi-outcomes || fail_part "outcome reader" "$d/outcomes.log" "the process exited"
  log "outcome reader running: $AST_HOST_DIR/log/cel-custom/dialguard-outcomes.csv (log: $d/outcomes.log)"
}

outcomes_stop() {
  stop_pid "$STACK_DIR/services/outcomes.pid" dialguard-agi-outcomes 10
}

# --- the campaign dialer (ARI Stasis app, `dialguard dialer run`) -------------------
# Dev stack: agents are SIPp agent phones on the carrier port + 30 (the dialer e2e
# tests start them there); campaigns not assigned to another dialer (their
# `dialer` column) are run by this one, one dialer per campaign (advisory lock).
# Same guard settings as the FastAGI server (test clock, default rules): both
# share one engine and one set of counters.
DIALER_APP=${DIALGUARD_DIALER_APP:-dialguard-dialer}
AGENT_PHONES_PORT=$((CARRIER_PORT + 30))
DIALER_AGENTS=${DIALGUARD_DIALER_AGENTS:-agent1=PJSIP/agent-phones/sip:agent1@127.0.0.1:$AGENT_PHONES_PORT,agent2=PJSIP/agent-phones/sip:agent2@127.0.0.1:$AGENT_PHONES_PORT}
DIALER_ENV=("${AGI_SERVER_ENV[@]}" "DIALGUARD_DIALER_APP=$DIALER_APP" "DIALGUARD_DIALER_AGENTS=$DIALER_AGENTS"
            "DIALGUARD_DIALER_METRICS_PORT=$DIALER_METRICS_PORT")

dialer_available() {
  [[ -x $VENV/bin/dialguard ]] && "$VENV/bin/dialguard" dialer run --help >/dev/null 2>&1
}

# dialer_settings_ok: the running dialer has the settings DIALER_ENV asks for
# and the Redis URL of the services' transport.
dialer_settings_ok() {
  service_env_ok dialer "${DIALER_ENV[@]}" "DIALGUARD_REDIS_URL=$(service_url dialer)"
}

# dialer_start: start the dialer (if not running; restarted if its settings
# changed) and wait until its /healthz is 200 (events socket up, PostgreSQL ok).
dialer_start() {
  local d=$STACK_DIR/services url="http://127.0.0.1:$DIALER_METRICS_PORT/healthz"
  if pid_alive "$d/dialer.pid" dialguard && ! dialer_settings_ok; then
    log "campaign dialer runs with other settings: restarting it"
    dialer_stop
  fi
  pid_alive "$d/dialer.pid" dialguard || "$VENV/bin/python" "$PROBE" free tcp "$DIALER_METRICS_PORT" ||
    die "campaign dialer: metrics port $DIALER_METRICS_PORT busy. Another stack or service uses it; set DIALGUARD_PORT_OFFSET=100 or DIALGUARD_DIALER_METRICS_PORT (docs/PORTS.md)"
  start_service dialer "${DIALER_ENV[@]}" "DIALGUARD_REDIS_URL=$(service_url dialer)" -- "$VENV/bin/dialguard" dialer run
  wait_for "campaign dialer ($url)" "$d/dialer.log" 30 "$d/dialer.pid" "$VENV/bin/python" "$PROBE" http "$url"
  log "campaign dialer up: Stasis app $DIALER_APP, metrics http://127.0.0.1:$DIALER_METRICS_PORT/metrics (log: $d/dialer.log)"
}

# dialer_stop: SIGTERM (it stops placing calls and drains for up to DIALGUARD_DIALER_DRAIN_S, 10 s;
# calls still up are adopted at the next start).
dialer_stop() {
  stop_pid "$STACK_DIR/services/dialer.pid" dialguard 15
}

# --- a shifted clock (make test-dates, the shifted pass of make test) ----------------
# fake_clock AT: every process started from here on (Redis, PostgreSQL, the guard's
# services, pytest and the test clusters) sees the wall clock moved to AT (ISO time,
# e.g. 2028-02-29T14:00:00Z) and ticking from there, through libfaketime (Debian
# package faketime). One fixed offset for all processes ("+N" seconds, computed
# once here), so Redis TIME, PostgreSQL now() and Python agree to the second; "@AT"
# would start each process's clock at AT when that process starts. Monotonic clocks
# stay real (timeouts, pacing, asyncio). The chrooted Asterisk is shifted too (its
# CEL outcome times and the dialer's answer traces meet the guard's clock;
# stack-up.sh start_asterisk); a system Asterisk (DIALGUARD_ASTERISK=system) keeps
# the real clock. SIPp, started by the tests, is shifted with them (it only
# measures intervals).
# (|| true: on a machine without the package yet, set -o pipefail would end
# every script sourcing this file before setup.sh could install it)
FAKETIME_LIB=${DIALGUARD_FAKETIME_LIB:-$(ls /usr/lib/*/faketime/libfaketime.so.1 2>/dev/null | head -n 1 || true)}
fake_clock() {
  local at=$1 target off
  [[ -n $FAKETIME_LIB && -f $FAKETIME_LIB ]] || die "libfaketime not found: run 'make setup' (Debian package faketime)"
  target=$(date -u -d "$at" +%s) || die "cannot read the time $at"
  off=$((target - $(date -u +%s)))
  ((off >= 0)) && off="+$off"
  faketime_fixes || die "could not build scripts/faketime-fixes.c (needs cc: run 'make setup')"
  faketime_clear_stale
  export LD_PRELOAD=$FAKETIME_FIXES:$FAKETIME_LIB FAKETIME=$off FAKETIME_DONT_FAKE_MONOTONIC=1 DIALGUARD_FAKE_AT=$at
  unset FAKETIME_SHARED
}

# faketime_clear_stale: libfaketime gives every process a semaphore and a shared
# memory segment named after its pid (/dev/shm/sem.faketime_sem_PID, faketime_shm_PID,
# mode 0600) and removes them only on a clean exit; a process that execs or is
# killed leaves them. A postgres-user process whose pid matches a stale root-owned
# pair cannot create its own and dies ("sem_open failed ... Permission denied"):
# remove the pairs of processes that no longer run.
faketime_clear_stale() {
  local f pid
  for f in /dev/shm/sem.faketime_sem_* /dev/shm/faketime_shm_*; do
    [[ -e $f ]] || continue
    pid=${f##*_}
    [[ $pid =~ ^[0-9]+$ ]] && ! kill -0 "$pid" 2>/dev/null && rm -f "$f"
  done
  return 0
}

# faketime_fixes: build scripts/faketime-fixes.c, preloaded before libfaketime:
# Redis's jemalloc hangs under libfaketime, and Python's time.sleep fails with
# FAKETIME_DONT_FAKE_MONOTONIC=1 (see the file).
FAKETIME_FIXES=$REPO_ROOT/.stack/faketime/faketime-fixes.so
faketime_fixes() {
  local src=$REPO_ROOT/scripts/faketime-fixes.c
  [[ -f $FAKETIME_FIXES && $FAKETIME_FIXES -nt $src ]] && return 0
  mkdir -p "$(dirname "$FAKETIME_FIXES")"
  cc -shared -fPIC -O2 -Wall -o "$FAKETIME_FIXES.tmp" "$src" -ldl && mv "$FAKETIME_FIXES.tmp" "$FAKETIME_FIXES"
}

# no_fake CMD...: CMD on the real clock (Asterisk, its CLI). An array, not a
# function, so that `"${NO_FAKE[@]}" CMD &` leaves $! the pid of CMD.
NO_FAKE=(env -u LD_PRELOAD -u FAKETIME -u FAKETIME_SHARED -u FAKETIME_DONT_FAKE_MONOTONIC)
no_fake() { "${NO_FAKE[@]}" "$@"; }

# clock_report: the time as Python, Redis and PostgreSQL of the stack see it.
clock_report() {
  local py redis pg
  py=$("$VENV/bin/python" -c 'import datetime; print(datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"))')
  redis=$(redis-cli -u "$(role_url admin)" --no-auth-warning time | head -n 1)
  redis=$(date -u -d "@$redis" +%Y-%m-%dT%H:%M:%S+00:00 2>/dev/null || echo "$redis")
  pg=$("$PG_BIN/psql" "$PG_ADMIN_DSN" -qAt -c "select to_char(now() at time zone 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS+00:00')")
  log "clock: python $py, redis TIME $redis, postgresql now() $pg, real $(no_fake date -u +%Y-%m-%dT%H:%M:%S+00:00)"
}

# --- the console and API (`dialguard web`, docs/WEB.md) -------------------------------
# Same guard settings as the FastAGI server (test clock, default rules): the
# eligibility API answers on the clock and rules the guard decides with.
WEB_ENV=("${AGI_SERVER_ENV[@]}" "DIALGUARD_WEB_PORT=$WEB_PORT" "DIALGUARD_WEB_HOST=127.0.0.1")

web_available() {
  [[ -x $VENV/bin/dialguard ]] && "$VENV/bin/dialguard" web --help >/dev/null 2>&1
}

# web_start: start the console (if not running) and wait until /healthz is 200
# (PostgreSQL users table and Redis answering).
web_start() {
  local d=$STACK_DIR/services url="http://127.0.0.1:$WEB_PORT/healthz"
  restart_if_changed web dialguard 10 "${WEB_ENV[@]}" "DIALGUARD_REDIS_URL=$(service_url web)"
  pid_alive "$d/web.pid" dialguard || "$VENV/bin/python" "$PROBE" free tcp "$WEB_PORT" ||
    die "console: port $WEB_PORT busy. Another stack or service uses it; set DIALGUARD_PORT_OFFSET=100 or DIALGUARD_WEB_PORT (docs/PORTS.md)"
  # Redis: the dialer's ACL user for now (the guard's commands, MULTI for the kill switch's
  # change-and-audit); a role of its own (read-mostly) is to do in dialguard/redis_acl.py.
  start_service web "${WEB_ENV[@]}" "DIALGUARD_REDIS_URL=$(service_url web)" -- "$VENV/bin/dialguard" web
  wait_for "console ($url)" "$d/web.log" 30 "$d/web.pid" "$VENV/bin/python" "$PROBE" http "$url"
  log "console up: http://127.0.0.1:$WEB_PORT/ (users: dialguard user add; log: $d/web.log)"
}

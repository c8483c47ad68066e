#!/usr/bin/env bash
# make up: start the dev stack of this checkout under .stack/ and wait until
# every part answers. Running it again while the stack is up is harmless.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

stack_lock
# A stack of this checkout already running keeps the settings it started with.
if [[ -f $STACK_DIR/env ]] && { pid_alive "$STACK_DIR/redis/redis.pid" redis-server ||
     pid_alive "$STACK_DIR/pg/data/postmaster.pid" postgres || pid_alive "$AST_PIDFILE" asterisk; }; then
  # shellcheck disable=SC1091
  source "$STACK_DIR/env"
  source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
fi
[[ -x $VENV/bin/python ]] || die ".venv missing: run 'make setup' first"
PY=$VENV/bin/python
# Everything the stack writes (Redis data and AOF, logs, spool, secrets) is for
# its owner only; .stack itself stays traversable for the postgres OS user.
umask 077
mkdir -p "$STACK_DIR"
chmod 0711 "$STACK_DIR"

# --- secrets: generated once per checkout, never built in ------------------------
# .stack/secrets/: secrets.env (hash secret, data key), redis-<role>.env (one
# Redis ACL user per role) and redis-users.acl (Redis' aclfile). `make clean`
# removes them with the data they protect.
ensure_secrets() {
  # Key pattern dg*: the dev stack's services use prefix dg, the tests dg<something>:.
  "$VENV/bin/dialguard" init --dir "$SECRETS_DIR" --prefix 'dg*' >"$STACK_DIR/init.log" 2>&1 ||
    fail_part "secrets" "$STACK_DIR/init.log" "dialguard init failed"
}

need_free() { # PART PROTO PORT...
  local part=$1; shift
  "$PY" "$PROBE" free "$@" || die "$part: port busy. Another stack (another checkout?) or service uses it; set DIALGUARD_PORT_OFFSET=100 or the DIALGUARD_*_PORT variables (docs/PORTS.md)"
}

# --- Redis (AOF, fsync every second) -----------------------------------------
# Data nodes answer the admin ACL user only (no password-less user); Sentinels anyone on loopback.
redis_ping() { [[ $(redis-cli -u "$(role_url admin | sed "s/:$REDIS_PORT\//:$1\//")" --no-auth-warning ping 2>/dev/null) == PONG ]]; }
sentinel_ping() { [[ $(redis-cli -h 127.0.0.1 -p "$1" ping 2>/dev/null) == PONG ]]; }

# The data nodes' credentials for replication and Sentinel: Redis' own superuser
# (the default user behind its generated password, .stack/secrets/redis-default.env);
# the dialguard roles may not replicate or reconfigure.
redis_url_auth() {
  local DIALGUARD_REDIS_USER DIALGUARD_REDIS_PASSWORD
  # shellcheck disable=SC1091
  source "$SECRETS_DIR/redis-default.env"
  printf '%s\n%s\n' "$DIALGUARD_REDIS_USER" "$DIALGUARD_REDIS_PASSWORD"
}

# The primary the Sentinels name now ("host port"), empty if none answers.
sentinel_primary() {
  local p
  for p in "${SENTINEL_PORTS[@]}"; do
    redis-cli -h 127.0.0.1 -p "$p" sentinel get-master-addr-by-name "$REDIS_MASTER" 2>/dev/null |
      paste -sd ' ' | grep -E '^[0-9.]+ [0-9]+$' && return 0
  done
  return 0
}

# start_redis_node DIR PORT: one data node. With DIALGUARD_REDIS_HA=1 a node that
# is not the primary the Sentinels name (the replica; a killed primary coming
# back after a failover) starts as a replica of it.
start_redis_node() {
  local d=$STACK_DIR/$1 port=$2
  local pidf=$d/redis.pid logf=$d/redis.log primary=
  # Every data node has a Unix socket in its folder (the primary's is $REDIS_SOCKET, for the
  # services with DIALGUARD_REDIS_TRANSPORT=unix); mode 700: this user's processes only.
  local sock=$d/redis.sock
  [[ $1 != redis ]] || sock=$REDIS_SOCKET
  ((${#sock} <= 107)) || die "Redis socket path $sock is longer than 107 bytes: set DIALGUARD_REDIS_SOCKET to a shorter one"
  if pid_alive "$pidf" redis-server && ! cmp -s "$SECRETS_DIR/redis-users.acl" "$d/users.acl.loaded"; then
    # Users changed (or a Redis from before the ACL users): restart it (the AOF keeps the data).
    log "Redis ACL users changed: restarting Redis on port $port"
    stop_pid "$pidf" redis-server 20
  fi
  if pid_alive "$pidf" redis-server && [[ ! -S $sock ]]; then
    log "Redis on port $port has no Unix socket $sock (an older make up): restarting it"
    stop_pid "$pidf" redis-server 20
  fi
  if ! pid_alive "$pidf" redis-server; then
    command -v redis-server >/dev/null || die "redis-server missing: run 'make setup'"
    need_free Redis tcp "$port"
    mkdir -p "$d/data"
    chmod 0700 "$d" "$d/data"
    # No default user: one ACL user per role (dialguard/redis_acl.py, .stack/secrets/redis-users.acl).
    cat >"$d/redis.conf" <<CONF
bind 127.0.0.1
port $port
protected-mode yes
daemonize yes
pidfile $pidf
logfile $logf
dir $d/data
appendonly yes
appendfsync everysec
save ""
aclfile $SECRETS_DIR/redis-users.acl
unixsocket $sock
unixsocketperm 700
CONF
    if [[ $REDIS_HA == 1 ]]; then
      primary=$(sentinel_primary)
      [[ -n $primary ]] || primary="127.0.0.1 $REDIS_PORT"   # first start: the primary is $REDIS_PORT
      if [[ $primary == "127.0.0.1 $port" ]]; then primary=; else echo "replicaof $primary" >>"$d/redis.conf"; fi
      local auth; mapfile -t auth < <(redis_url_auth)
      [[ -z ${auth[0]} ]] || echo "masteruser ${auth[0]}" >>"$d/redis.conf"
      [[ -z ${auth[1]} ]] || echo "masterauth ${auth[1]}" >>"$d/redis.conf"
    fi
    redis-server "$d/redis.conf" 8>&- || fail_part Redis "$logf" "redis-server failed to start"
    cp "$SECRETS_DIR/redis-users.acl" "$d/users.acl.loaded"
  fi
  wait_for "Redis (127.0.0.1:$port)" "$logf" 20 "$pidf" redis_ping "$port"
  log "Redis up on 127.0.0.1:$port and $sock${primary:+ (replica of ${primary/ /:})} (log: $logf)"
}

start_sentinel() { # N PORT
  local d=$STACK_DIR/sentinel-$1 port=$2
  local pidf=$d/sentinel.pid logf=$d/sentinel.log
  if ! pid_alive "$pidf" redis-server; then
    need_free Sentinel tcp "$port"
    mkdir -p "$d"
    local primary auth; primary=$(sentinel_primary)
    [[ -n $primary ]] || primary="127.0.0.1 $REDIS_PORT"
    mapfile -t auth < <(redis_url_auth)
    # Quorum 2 of 3; a primary silent for 1 s is down (the refusal window is
    # about that plus the election; docs/OPERATIONS.md). Sentinel rewrites this
    # file as it learns the replicas, the other Sentinels and failovers.
    cat >"$d/sentinel.conf" <<CONF
bind 127.0.0.1
port $port
daemonize yes
pidfile $pidf
logfile $logf
dir $d
sentinel monitor $REDIS_MASTER $primary 2
sentinel down-after-milliseconds $REDIS_MASTER 1000
sentinel failover-timeout $REDIS_MASTER 10000
sentinel parallel-syncs $REDIS_MASTER 1
CONF
    [[ -z ${auth[0]} ]] || echo "sentinel auth-user $REDIS_MASTER ${auth[0]}" >>"$d/sentinel.conf"
    [[ -z ${auth[1]} ]] || echo "sentinel auth-pass $REDIS_MASTER ${auth[1]}" >>"$d/sentinel.conf"
    # redis-sentinel is redis-server in Sentinel mode (Debian's redis-sentinel package).
    redis-server "$d/sentinel.conf" --sentinel 8>&- || fail_part Sentinel "$logf" "redis-server --sentinel failed"
  fi
  wait_for "Sentinel (127.0.0.1:$port)" "$logf" 20 "$pidf" sentinel_ping "$port"
}

# Every Sentinel knows the replica and the two other Sentinels: a failover can happen.
sentinels_ready() {
  local p info
  for p in "${SENTINEL_PORTS[@]}"; do
    info=$(redis-cli -h 127.0.0.1 -p "$p" sentinel master "$REDIS_MASTER" 2>/dev/null | paste -sd ' ')
    [[ $info =~ num-slaves\ ([0-9]+) ]] && ((BASH_REMATCH[1] >= 2)) || return 1
    [[ $info =~ num-other-sentinels\ ([0-9]+) ]] && ((BASH_REMATCH[1] >= 2)) || return 1
  done
}

start_redis() {
  start_redis_node redis "$REDIS_PORT"
  [[ $REDIS_HA == 1 ]] || return 0
  start_redis_node redis-replica "$REDIS_REPLICA_PORT"
  start_redis_node redis-replica2 "$REDIS_REPLICA2_PORT"
  local i
  for i in 0 1 2; do start_sentinel "$((i + 1))" "${SENTINEL_PORTS[$i]}"; done
  wait_for "Sentinels (127.0.0.1:${SENTINEL_PORTS[*]})" "$STACK_DIR/sentinel-1/sentinel.log" 30 - sentinels_ready
  log "Redis HA up: primary $(sentinel_primary | tr ' ' :), Sentinels on 127.0.0.1:${SENTINEL_PORTS[*]}, master name $REDIS_MASTER"
}

# --- PostgreSQL: a cluster of our own ------------------------------------------
start_pg() {
  local d=$STACK_DIR/pg
  local data=$d/data logf=$d/postgresql.log
  local as=()
  [[ -n $PG_BIN && -x $PG_BIN/initdb ]] || die "PostgreSQL binaries not found under /usr/lib/postgresql: run 'make setup'"
  mkdir -p "$d/run"
  # PostgreSQL refuses to run as root: root runs it as the postgres OS user.
  if [[ $EUID -eq 0 ]]; then
    id postgres >/dev/null 2>&1 || die "no 'postgres' OS user (installed with the postgresql package): run 'make setup'"
    chown -R postgres: "$d"
    as=(runuser -u postgres --)
    "${as[@]}" test -w "$d" ||
      die "the postgres user cannot reach $d: make every parent folder of the checkout traversable (chmod o+x)"
  fi
  if [[ ! -f $data/PG_VERSION ]]; then
    rm -rf "$data" "$data.tmp"
    log "PostgreSQL: creating the cluster in $data"
    "${as[@]}" "$PG_BIN/initdb" -D "$data.tmp" -U postgres --auth=trust -E UTF8 --no-locale \
      >"$d/initdb.log" 2>&1 || fail_part PostgreSQL "$d/initdb.log" "initdb failed"
    mv "$data.tmp" "$data"
  fi
  if ! pid_alive "$data/postmaster.pid" postgres; then
    need_free PostgreSQL tcp "$PG_PORT"
    "${as[@]}" "$PG_BIN/pg_ctl" -D "$data" -l "$logf" -w -t 60 start \
      -o "-p $PG_PORT -c listen_addresses=127.0.0.1 -c unix_socket_directories=$d/run -c max_connections=200" \
      >>"$d/pg_ctl.log" 2>&1 8>&- || fail_part PostgreSQL "$logf" "pg_ctl start failed"
  fi
  wait_for "PostgreSQL (127.0.0.1:$PG_PORT)" "$logf" 30 "$data/postmaster.pid" \
    "$PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$PG_PORT"
  local psql=("$PG_BIN/psql" -h 127.0.0.1 -p "$PG_PORT" -U postgres -v ON_ERROR_STOP=1 -qAt)
  # The services' login `dialguard` owns nothing: not the database (whose owner
  # owns schema public and may drop any table in it), not a table (dialguard_admin,
  # via `dialguard db migrate`, owns them); it is a member of dialguard_writer only.
  if [[ $("${psql[@]}" -d postgres -c "select 1 from pg_roles where rolname = 'dialguard'") != 1 ]]; then
    "${psql[@]}" -d postgres -c "create role dialguard login" >/dev/null
  fi
  "${psql[@]}" -d postgres -c "alter role dialguard nocreatedb nocreaterole nosuperuser" >/dev/null
  if [[ $("${psql[@]}" -d postgres -c "select 1 from pg_database where datname = 'dialguard'") != 1 ]]; then
    "${psql[@]}" -d postgres -c "create database dialguard owner postgres" >/dev/null
  fi
  "${psql[@]}" -d postgres -c "alter database dialguard owner to postgres" >/dev/null
  log "PostgreSQL up on 127.0.0.1:$PG_PORT, database dialguard (log: $logf)"
}

# --- Asterisk 22 ------------------------------------------------------------------
sed_escape() { printf '%s' "$1" | sed -e 's/[\\|&]/\\&/g'; }

render_asterisk_conf() {
  local etc=$AST_HOST_DIR/etc f args=() var
  mkdir -p "$AST_HOST_DIR"/{etc,run,log/cdr-csv,log/cdr-custom,log/cel-custom,spool,db,cache}
  for var in AST_DIR SIP_PORT CARRIER_PORT AGENTS_PORT ARI_PORT ARI_USER ARI_PASSWORD AGI_PORT RTP_START RTP_END; do
    args+=(-e "s|@@$var@@|$(sed_escape "${!var}")|g")
  done
  if [[ ! -f $REPO_ROOT/asterisk_conf/extensions_dialguard.conf ]]; then
    die "asterisk_conf/extensions_dialguard.conf is missing (included by extensions.conf)"
  fi
  rm -f "$etc"/*.conf
  for f in "$REPO_ROOT"/asterisk_conf/*.conf; do
    sed "${args[@]}" "$f" >"$etc/$(basename "$f")"
  done
  if grep -l '@@[A-Z_]*@@' "$etc"/*.conf >&2; then
    die "unknown @@PLACEHOLDER@@ left in the Asterisk config above (see asterisk_conf/README.md)"
  fi
}

prepare_root() {
  local root=$ASTERISK_ROOT host
  [[ -x $root$ASTERISK_BIN ]] || "$REPO_ROOT/scripts/asterisk-root.sh"
  [[ -x $root$ASTERISK_BIN ]] || die "no Asterisk in $root"
  mkdir -p "$root/dialguard" "$root/proc"
  # No DNS here: Asterisk must not stall resolving the host name or the root servers.
  host=$(hostname)
  cat >"$root/etc/hosts.dialguard" <<HOSTS
127.0.0.1	localhost
127.0.0.1	$host $(hostname -f 2>/dev/null || echo "$host")
127.0.0.1	A.ROOT-SERVERS.NET a.root-servers.net
::1	localhost ip6-localhost ip6-loopback
HOSTS
  mv "$root/etc/hosts.dialguard" "$root/etc/hosts"
}

ast_booted() { ast_rx "core waitfullybooted" | grep -q "fully booted"; }
ari_ok() { "$PY" "$PROBE" http "http://127.0.0.1:$ARI_PORT/ari/asterisk/info" "$ARI_USER" "$ARI_PASSWORD"; }

start_asterisk() {
  local logf=$AST_HOST_DIR/log/messages.log console=$AST_HOST_DIR/console.log
  [[ $ASTERISK_MODE == system ]] || prepare_root
  render_asterisk_conf
  if pid_alive "$AST_PIDFILE" asterisk; then
    ast_rx "core reload" >/dev/null || true   # pick up edited configs
  else
    need_free Asterisk udp "$SIP_PORT"
    need_free Asterisk tcp "$ARI_PORT"
    rm -f "$AST_HOST_DIR/run/asterisk.ctl" "$AST_HOST_DIR/run/asterisk.pid"
    if [[ $ASTERISK_MODE == system ]]; then
      [[ -x $ASTERISK_BIN ]] || die "DIALGUARD_ASTERISK=system but no asterisk binary (set DIALGUARD_ASTERISK_BIN)"
      "${NO_FAKE[@]}" setsid "$ASTERISK_BIN" -f -n -C "$AST_DIR/etc/asterisk.conf" >"$console" 2>&1 </dev/null 8>&- &
    else
      [[ $EUID -eq 0 ]] || die "the chrooted Asterisk needs root (or DIALGUARD_ASTERISK=system)"
      # Private mount namespace: /proc and the runtime folder are mounted for
      # Asterisk only and vanish with it, even if it is killed.
      # On a shifted clock (make test-dates) Asterisk is shifted too: the CEL
      # outcomes and the dialer's answer traces carry its times. The libraries go
      # into the bound folder (the chroot has no libfaketime) and a tmpfs on its
      # /dev/shm takes libfaketime's per-process files, not the cached root.
      local preload=""
      if [[ -n ${DIALGUARD_FAKE_AT:-} && -n ${FAKETIME:-} ]]; then
        mkdir -p "$AST_HOST_DIR/faketime"
        cp -f "$FAKETIME_FIXES" "$AST_HOST_DIR/faketime/faketime-fixes.so"
        cp -f "$FAKETIME_LIB" "$AST_HOST_DIR/faketime/libfaketime.so.1"
        preload="LD_PRELOAD=/dialguard/faketime/faketime-fixes.so:/dialguard/faketime/libfaketime.so.1 FAKETIME=$FAKETIME FAKETIME_DONT_FAKE_MONOTONIC=1"
      fi
      "${NO_FAKE[@]}" setsid unshare --mount --propagation private -- sh -c '
        mount -t proc proc "$1/proc" && mount --bind "$2" "$1/dialguard" &&
        { [ -z "$4" ] || mount -t tmpfs -o size=16m tmpfs "$1/dev/shm"; } &&
        exec chroot "$1" /usr/bin/env $4 "$3" -f -n -C /dialguard/etc/asterisk.conf' \
        sh "$ASTERISK_ROOT" "$AST_HOST_DIR" "$ASTERISK_BIN" "$preload" >"$console" 2>&1 </dev/null 8>&- &
    fi
    echo $! >"$AST_PIDFILE"
  fi
  wait_for "Asterisk" "$console" 60 "$AST_PIDFILE" ast_booted
  wait_for "Asterisk ARI (http://127.0.0.1:$ARI_PORT/ari/asterisk/info)" "$logf" 20 "$AST_PIDFILE" ari_ok
  # Every module named in modules.conf must be loaded.
  local loaded missing=() m
  loaded=$(ast_rx "module show")
  for m in $(sed -n 's/^load *=> *\([^ ;]*\).*/\1/p' "$AST_HOST_DIR/etc/modules.conf"); do
    grep -q "^$m " <<<"$loaded" || missing+=("$m")
  done
  ((${#missing[@]} == 0)) || fail_part Asterisk "$logf" "modules not loaded: ${missing[*]}"
  log "Asterisk up: SIP udp 127.0.0.1:$SIP_PORT, ARI http://127.0.0.1:$ARI_PORT (logs: $AST_HOST_DIR/log/)"
}

write_env() {
  local f=$STACK_DIR/env var
  q() { local v=${1//\'/\'\\\'\'}; printf "'%s'" "$v"; }   # single-quoted for sh and shlex
  {
    echo "# Written by scripts/stack-up.sh: source it to reach this checkout's stack."
    for var in REDIS_URL PG_DSN REDIS_PORT PG_PORT SIP_PORT ARI_PORT AGI_PORT CARRIER_PORT AGENTS_PORT \
               METRICS_PORT DIALER_METRICS_PORT WEB_PORT RTP_START RTP_END ARI_USER ARI_PASSWORD; do
      echo "export DIALGUARD_$var=$(q "${!var}")"
    done
    echo "export DIALGUARD_PG_ADMIN_DSN=$(q "$PG_ADMIN_DSN")"
    # The primary's Unix socket (the services' transport: DIALGUARD_REDIS_TRANSPORT, lib.sh).
    echo "export DIALGUARD_REDIS_SOCKET=$(q "$REDIS_SOCKET")"
    if [[ $REDIS_HA == 1 ]]; then
      echo "export DIALGUARD_REDIS_HA=1"
      echo "export DIALGUARD_REDIS_SENTINELS=$(q "$REDIS_SENTINELS")"
      echo "export DIALGUARD_REDIS_MASTER=$(q "$REDIS_MASTER")"
      # An ALLOW waits until a replica has its reservation (no over-admission across a failover).
      echo "export DIALGUARD_REDIS_WAIT_REPLICAS=$(q "${DIALGUARD_REDIS_WAIT_REPLICAS:-1}")"
      echo "export DIALGUARD_REDIS_REPLICA_PORT=$(q "$REDIS_REPLICA_PORT")"
      echo "export DIALGUARD_REDIS_REPLICA2_PORT=$(q "$REDIS_REPLICA2_PORT")"
      echo "export DIALGUARD_SENTINEL_PORT=$(q "$SENTINEL_PORT")"
    fi
    echo "export DIALGUARD_SPOOL_DIR=$(q "$SPOOL_DIR")"
    echo "export DIALGUARD_SECRETS_FILE=$(q "$SECRETS_DIR/secrets.env")"
    echo "export DIALGUARD_SECRETS_DIR=$(q "$SECRETS_DIR")"
    echo "export DIALGUARD_TEST_REGISTRY=$(q "$STACK_DIR/test-clusters")"
    echo "export DIALGUARD_ARI_URL=$(q "http://127.0.0.1:$ARI_PORT")"
    echo "export DIALGUARD_STACK_DIR=$(q "$STACK_DIR")"
    echo "export DIALGUARD_ASTERISK=$(q "$ASTERISK_MODE")"
    echo "export DIALGUARD_ASTERISK_ROOT=$(q "$ASTERISK_ROOT")"
    echo "export DIALGUARD_ASTERISK_LOG_DIR=$(q "$AST_HOST_DIR/log")"
  } >"$f.tmp"
  mv "$f.tmp" "$f"
}

# --- dialguard services (start_service, agi_server_* in lib.sh) ---------------------
start_services() {
  local d=$STACK_DIR/services
  # The FastAGI server, once its entry point exists and imports. Dev-stack
  # settings (test clock, default rules): AGI_SERVER_ENV in lib.sh.
  if agi_server_available; then
    agi_server_start
  fi
  # Schema: sql/ migrations, applied as the cluster's superuser (they create the
  # admin, writer and reader roles); idempotent, refuses a changed applied file.
  mkdir -p "$d"
  if [[ -x $VENV/bin/dialguard ]] && "$VENV/bin/dialguard" db --help >/dev/null 2>&1; then
    DIALGUARD_PG_DSN=$PG_DSN DIALGUARD_PG_ADMIN_DSN=$PG_ADMIN_DSN DIALGUARD_SECRETS_FILE=$SECRETS_DIR/secrets.env \
      "$VENV/bin/dialguard" db migrate \
      >"$d/migrate.log" 2>&1 || fail_part "schema migration" "$d/migrate.log" "dialguard db migrate failed"
    log "database schema up to date (log: $d/migrate.log)"
  fi
  # HOOK (audit): ships decisions and outcomes from Redis to PostgreSQL.
  if [[ -x $VENV/bin/dialguard ]] && "$VENV/bin/dialguard" audit-ship --help >/dev/null 2>&1; then
    restart_if_changed audit-ship dialguard 15 "DIALGUARD_REDIS_URL=$(service_url shipper)"
    start_service audit-ship "DIALGUARD_REDIS_URL=$(service_url shipper)" -- "$VENV/bin/dialguard" audit-ship
    sleep 1
    pid_alive "$d/audit-ship.pid" dialguard || fail_part "audit shipper" "$d/audit-ship.log" "the process exited"
    log "audit shipper running (log: $d/audit-ship.log)"
  fi
  # Call outcomes from Asterisk's CEL file (no second AGI session a call): outcomes_* in lib.sh.
  if outcomes_available; then
    outcomes_start
  fi
  # The campaign dialer (ARI Stasis app), after the schema it needs: dialer_* in lib.sh.
  if dialer_available; then
    dialer_start
  fi
  # The console and API, after the schema (users): web_* in lib.sh.
  if web_available; then
    web_start
  fi
}

start=$SECONDS
ensure_secrets
REDIS_URL=$(role_url admin)  # the operator's (and the tests') user; services get their own
start_redis
start_pg
write_env
start_asterisk
start_services
log "stack up in $((SECONDS - start))s; settings in $STACK_DIR/env (source it), stop with 'make down'"

#!/usr/bin/env bash
# Local infrastructure for provenroute: real Kafka (KRaft, from Maven Central jars), a
# PostgreSQL cluster (Debian's package) and a Docker engine (Debian's docker.io) with a
# locally bootstrapped base image. Idempotent: a second `up` only checks and starts.
#
#   scripts/services.sh up | down | status | install
#
# All state lives under $PROVENROUTE_STATE_DIR (default: <repo>/.state, git-ignored).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
STATE="${PROVENROUTE_STATE_DIR:-$ROOT/.state}"
PY="${PYTHON:-$ROOT/.venv/bin/python}"

KAFKA_PORT="${PROVENROUTE_KAFKA_PORT:-9092}"
KAFKA_CONTROLLER_PORT="${PROVENROUTE_KAFKA_CONTROLLER_PORT:-9093}"
KAFKA_HEAP="${PROVENROUTE_KAFKA_HEAP:-512m}"
PG_PORT="${PROVENROUTE_PG_PORT:-5432}"
PG_BIN="${PROVENROUTE_PG_BIN:-$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)}"
BASE_IMAGE="${PROVENROUTE_BASE_IMAGE:-provenroute/base:bookworm}"
DEBIAN_MIRROR="${PROVENROUTE_DEBIAN_MIRROR:-http://deb.debian.org/debian}"

KAFKA_DIR="$STATE/kafka"
DOCKER_DIR="$STATE/docker"

log() { printf '\033[1;34m[services]\033[0m %s\n' "$*" >&2; }
die() { printf '\033[1;31m[services] error:\033[0m %s\n' "$*" >&2; exit 1; }

# A pid file left by a reboot may name an unrelated process: check what it runs too.
alive() {
  [ -f "$1" ] || return 1
  local pid; pid="$(cat "$1")"
  kill -0 "$pid" 2>/dev/null && grep -q "${2:-}" "/proc/$pid/cmdline" 2>/dev/null
}
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_until() {  # wait_until SECONDS DESCRIPTION COMMAND...
  local deadline=$((SECONDS + $1)) what="$2"; shift 2
  until "$@" >/dev/null 2>&1; do
    [ "$SECONDS" -lt "$deadline" ] || return 1
    sleep 0.5
  done
  log "$what ready"
}

# ---------------------------------------------------------------- packages
install_packages() {
  local missing=()
  command -v dockerd >/dev/null || missing+=(docker.io)
  command -v kcat >/dev/null || missing+=(kcat)
  command -v debootstrap >/dev/null || missing+=(debootstrap)
  [ -n "$PG_BIN" ] && [ -x "$PG_BIN/initdb" ] || missing+=(postgresql)
  command -v java >/dev/null || missing+=(default-jre-headless)
  python3 -c 'import ensurepip, venv' 2>/dev/null || missing+=(python3-venv)
  command -v mvn >/dev/null || missing+=(maven)
  # Debian's Chromium drives the admin page's browser tests (no browser downloads here).
  [ -x /usr/bin/chromium ] || missing+=(chromium)
  if [ "${#missing[@]}" -gt 0 ]; then
    log "installing Debian packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    PG_BIN="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)"
  fi
}

# ---------------------------------------------------------------- kafka
kafka_jars() {
  local stamp="$KAFKA_DIR/libs/.pom.sha"
  local want; want="$(sha256sum "$ROOT/scripts/kafka/pom.xml" | cut -d' ' -f1)"
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then return; fi
  log "fetching Apache Kafka jars from Maven Central"
  rm -rf "$KAFKA_DIR/libs"; mkdir -p "$KAFKA_DIR/libs"
  mvn -q -B -f "$ROOT/scripts/kafka/pom.xml" dependency:copy-dependencies \
    -DoutputDirectory="$KAFKA_DIR/libs" -DincludeScope=runtime
  echo "$want" > "$stamp"
}

kafka_config() {
  mkdir -p "$KAFKA_DIR/data" "$KAFKA_DIR/logs"
  cat > "$KAFKA_DIR/server.properties" <<EOF
process.roles=broker,controller
node.id=1
controller.quorum.bootstrap.servers=127.0.0.1:$KAFKA_CONTROLLER_PORT
listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT,CONTROLLER://127.0.0.1:$KAFKA_CONTROLLER_PORT
advertised.listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs=$KAFKA_DIR/data
num.partitions=1
default.replication.factor=1
offsets.topic.replication.factor=1
offsets.topic.num.partitions=10
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=true
log.retention.hours=168
EOF
  cat > "$KAFKA_DIR/log4j2.properties" <<EOF
status = warn
appender.file.type = File
appender.file.name = FILE
appender.file.fileName = $KAFKA_DIR/logs/server.log
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.file.ref = FILE
logger.kafka.name = kafka
logger.kafka.level = INFO
logger.apache.name = org.apache.kafka
logger.apache.level = WARN
EOF
}

kafka_java() {
  java -Xms128m -Xmx"$KAFKA_HEAP" -XX:+UseG1GC -XX:MaxGCPauseMillis=20 \
    -Djava.awt.headless=true -Dlog4j2.configurationFile="$KAFKA_DIR/log4j2.properties" \
    -cp "$KAFKA_DIR/libs/*" "$@"
}

kafka_up() {
  kafka_jars
  kafka_config
  if [ ! -f "$KAFKA_DIR/data/meta.properties" ]; then
    local cid; cid="$(kafka_java kafka.tools.StorageTool random-uuid | tail -n 1)"
    log "formatting KRaft storage (cluster $cid)"
    kafka_java kafka.tools.StorageTool format --standalone -t "$cid" \
      -c "$KAFKA_DIR/server.properties" >/dev/null
  fi
  if alive "$KAFKA_DIR/kafka.pid" kafka.Kafka; then
    log "kafka already running (pid $(cat "$KAFKA_DIR/kafka.pid"))"
  elif port_open "$KAFKA_PORT"; then
    log "a broker already answers on 127.0.0.1:$KAFKA_PORT; using it"
  else
    log "starting kafka on 127.0.0.1:$KAFKA_PORT (heap $KAFKA_HEAP)"
    rm -f "$KAFKA_DIR/kafka.pid"
    # In its own session (setsid), so a Ctrl-C in the shell or test run that started it
    # does not reach the broker; the shell that becomes java records its own pid.
    KAFKA_HEAP="$KAFKA_HEAP" KAFKA_DIR="$KAFKA_DIR" setsid bash -c \
      'echo $$ > "$KAFKA_DIR/kafka.pid"; exec java -Xms128m -Xmx"$KAFKA_HEAP" \
        -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -Djava.awt.headless=true \
        -Dlog4j2.configurationFile="$KAFKA_DIR/log4j2.properties" \
        -cp "$KAFKA_DIR/libs/*" kafka.Kafka "$KAFKA_DIR/server.properties"' \
      > "$KAFKA_DIR/logs/stdout.log" 2>&1 < /dev/null &
    wait_until 10 "kafka pid file" test -s "$KAFKA_DIR/kafka.pid" || die "kafka did not start"
  fi
  # Readiness means a client can create a topic and produce, not merely an open port.
  "$PY" -m api.cli services kafka-ready --timeout 120 \
    || { tail -n 30 "$KAFKA_DIR/logs/server.log" >&2 || true; die "kafka did not become ready"; }
  "$PY" -m api.cli services ensure-topics
}

kafka_down() {
  if alive "$KAFKA_DIR/kafka.pid" kafka.Kafka; then
    local pid; pid="$(cat "$KAFKA_DIR/kafka.pid")"
    log "stopping kafka (pid $pid)"
    kill "$pid"
    for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    kill -9 "$pid" 2>/dev/null || true
  fi
  rm -f "$KAFKA_DIR/kafka.pid"
}

# ---------------------------------------------------------------- postgres
pg_datadir() {
  # The server runs as the unprivileged `postgres` user, which must be able to reach its
  # data directory; a clone under a private home directory is not reachable, so the data
  # then lives in /var/lib/provenroute and .state/postgres points at it.
  local local_dir="$STATE/postgres"
  if [ -L "$local_dir" ]; then readlink "$local_dir"; return; fi
  mkdir -p "$STATE"
  if runuser -u postgres -- test -x "$STATE" 2>/dev/null; then
    echo "$local_dir"
  else
    local ext; ext="/var/lib/provenroute/$(echo "$ROOT" | sha256sum | cut -c1-12)/postgres"
    mkdir -p "$ext"; ln -sfn "$ext" "$local_dir"; echo "$ext"
  fi
}

pg_ready() { "$PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$PG_PORT"; }

pg_up() {
  [ -n "$PG_BIN" ] || die "PostgreSQL binaries not found"
  local data; data="$(pg_datadir)"
  mkdir -p /var/run/postgresql && chown postgres:postgres /var/run/postgresql
  if [ ! -f "$data/PG_VERSION" ]; then
    log "initialising PostgreSQL cluster in $data"
    mkdir -p "$data"; chown postgres:postgres "$data"; chmod 700 "$data"
    runuser -u postgres -- "$PG_BIN/initdb" -D "$data" -U postgres --auth=trust -E UTF8 \
      --locale=C.UTF-8 >/dev/null
    cat >> "$data/postgresql.conf" <<EOF
listen_addresses = '127.0.0.1'
port = $PG_PORT
unix_socket_directories = '/var/run/postgresql'
max_connections = 200
shared_buffers = 128MB
fsync = on
EOF
  fi
  if pg_ready && [ ! -f "$data/postmaster.pid" ]; then
    # Another server holds the port: usable only if it lets us in as we expect.
    "$PG_BIN/psql" -h 127.0.0.1 -p "$PG_PORT" -U postgres -w -qtA -c 'select 1' >/dev/null 2>&1 \
      || die "port $PG_PORT is taken by another PostgreSQL (Debian's own cluster?) that does \
not trust local connections: stop it (pg_ctlcluster 15 main stop) or set PROVENROUTE_PG_PORT \
and PROVENROUTE_DATABASE_URL"
    log "another PostgreSQL answers on 127.0.0.1:$PG_PORT and trusts us; using it"
  elif pg_ready; then
    log "postgres already answering on 127.0.0.1:$PG_PORT"
  else
    log "starting postgres on 127.0.0.1:$PG_PORT"
    runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$data" -l "$data/server.log" -w -t 60 start >/dev/null
  fi
  wait_until 60 "postgres" pg_ready || die "postgres did not become ready"
  local psql=("$PG_BIN/psql" -h 127.0.0.1 -p "$PG_PORT" -U postgres -qtA -v ON_ERROR_STOP=1)
  if [ "$("${psql[@]}" -c "select 1 from pg_roles where rolname='provenroute'")" != 1 ]; then
    "${psql[@]}" -c "create role provenroute login superuser"
  fi
  if [ "$("${psql[@]}" -c "select 1 from pg_database where datname='provenroute'")" != 1 ]; then
    "${psql[@]}" -c "create database provenroute owner provenroute"
  fi
}

pg_down() {
  local data; data="$(pg_datadir)"
  if [ -f "$data/postmaster.pid" ]; then
    log "stopping postgres"
    runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$data" -m fast -w stop >/dev/null || true
  fi
}

# ---------------------------------------------------------------- docker
docker_ok() { docker info >/dev/null 2>&1; }

docker_up() {
  if docker_ok; then
    log "docker engine answering"
  else
    log "starting dockerd (data in $DOCKER_DIR)"
    mkdir -p "$DOCKER_DIR"
    setsid nohup dockerd --data-root "$DOCKER_DIR/data" --exec-root /var/run/provenroute-docker \
      --pidfile "$DOCKER_DIR/dockerd.pid" > "$DOCKER_DIR/dockerd.log" 2>&1 &
    wait_until 60 "docker" docker_ok || { tail -n 20 "$DOCKER_DIR/dockerd.log" >&2; die "dockerd did not start"; }
    touch "$DOCKER_DIR/started-by-us"
  fi
  base_image
}

base_image() {
  if docker image inspect "$BASE_IMAGE" >/dev/null 2>&1; then return; fi
  # A registry, where one is reachable, is the quick path; otherwise bootstrap Debian.
  if timeout 20 docker pull -q python:3.11-slim-bookworm >/dev/null 2>&1; then
    docker tag python:3.11-slim-bookworm "$BASE_IMAGE"; log "base image from registry"; return
  fi
  log "bootstrapping base image $BASE_IMAGE (debootstrap minbase + python3, ~1 min)"
  local root="$STATE/rootfs"
  rm -rf "$root"
  debootstrap --variant=minbase --include=python3,jq,gawk,procps,ca-certificates \
    bookworm "$root" "$DEBIAN_MIRROR" > "$STATE/debootstrap.log" 2>&1 \
    || { tail -n 20 "$STATE/debootstrap.log" >&2; die "debootstrap failed"; }
  rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
  tar -C "$root" -c . | docker import \
    -c 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    -c 'ENV LANG=C.UTF-8' -c 'CMD ["/bin/bash"]' - "$BASE_IMAGE" >/dev/null
  rm -rf "$root"
  log "base image $BASE_IMAGE imported"
}

docker_down() {
  if [ -f "$DOCKER_DIR/started-by-us" ] && alive "$DOCKER_DIR/dockerd.pid" dockerd; then
    local pid; pid="$(cat "$DOCKER_DIR/dockerd.pid")"
    log "stopping dockerd (pid $pid)"
    kill "$pid"
    for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    rm -f "$DOCKER_DIR/started-by-us"
  fi
}

# ---------------------------------------------------------------- main
case "${1:-status}" in
  install) install_packages ;;
  up)
    install_packages
    mkdir -p "$STATE"
    pg_up
    docker_up
    kafka_up
    log "all services up"
    ;;
  down) kafka_down; pg_down; docker_down; log "all services stopped" ;;
  status) exec "$PY" -m api.cli services status ;;
  *) die "usage: $0 up|down|status|install" ;;
esac

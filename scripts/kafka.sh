#!/usr/bin/env bash
# Real Apache Kafka (KRaft) for development and tests, fetched from Maven Central.
#
#   scripts/kafka.sh fetch                 resolve the broker jars into the cache (once)
#   scripts/kafka.sh up [N]                start an N-node cluster (default 1) on free loopback
#                                          ports; prints NEARFIELD_BROKERS=host:port,... last
#   scripts/kafka.sh down [--kill]         stop the cluster and remove its data (--kill: SIGKILL
#                                          the nodes instead of a controlled shutdown, for a
#                                          throwaway cluster whose data goes with it)
#   scripts/kafka.sh stop-node I [--kill]  stop node I (SIGTERM, or SIGKILL with --kill)
#   scripts/kafka.sh start-node I          start node I again with its data
#   scripts/kafka.sh status                print the nodes and whether they run
#   scripts/kafka.sh acls ARGS...          Kafka's ACL tool (org.apache.kafka.tools.AclCommand)
#                                          on the cluster, as its admin: e.g. --list, or
#                                          --remove --allow-principal User:X --operation Write
#                                          --topic T --force (one right taken from a principal)
#
# Environment:
#   NEARFIELD_KAFKA_DIR       cluster state dir (default: <repo>/target/kafka)
#   NEARFIELD_CACHE_DIR       jar cache (default: ${XDG_CACHE_HOME:-~/.cache}/nearfield)
#   NEARFIELD_KAFKA_OWNER_PID when set, a watchdog tears the cluster down once that pid exits
#                             (`down` stops the watchdog too: nothing outlives it)
#   NEARFIELD_KAFKA_HEAP      broker heap (default 512m)
#   KAFKA_SECURITY            "scram": clients authenticate with SASL/SCRAM-SHA-512 and the
#                             StandardAuthorizer enforces ACLs (no ACL, no access); an admin
#                             principal (super user) is created at format time and its
#                             librdkafka settings are printed after NEARFIELD_BROKERS= as
#                             NEARFIELD_KAFKA_PROPERTY_<name>=<value> lines (also kept in
#                             <dir>/admin.env, and for Java tools in <dir>/admin.properties).
#                             Unset or "none": PLAINTEXT, no authorizer (development).
#
# Every node is broker and controller (process.roles=broker,controller). One node runs with
# replication factor 1; three or more with replication 3 and min.insync.replicas 2.
set -euo pipefail

KAFKA_VERSION=4.3.1
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/.." && pwd)"
CACHE="${NEARFIELD_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/nearfield}"
LIBS="$CACHE/kafka-$KAFKA_VERSION/libs"
DIR="${NEARFIELD_KAFKA_DIR:-$REPO/target/kafka}"
HEAP="${NEARFIELD_KAFKA_HEAP:-512m}"
SECURITY="${KAFKA_SECURITY:-none}"

log() { echo "kafka.sh: $*" >&2; }
die() { log "error: $*"; exit 1; }

ensure_tools() {
  if ! command -v java >/dev/null 2>&1; then
    log "java not found; installing openjdk-17-jre-headless"
    apt-get update -qq && apt-get install -y -qq openjdk-17-jre-headless >/dev/null
  fi
  if ! command -v mvn >/dev/null 2>&1; then
    log "mvn not found; installing maven"
    apt-get update -qq && apt-get install -y -qq maven >/dev/null
  fi
  command -v python3 >/dev/null 2>&1 || die "python3 is required (free ports, cluster ids)"
}

fetch() {
  ensure_tools
  if [[ -f "$LIBS/.complete" ]]; then return 0; fi
  log "fetching Apache Kafka $KAFKA_VERSION from Maven Central into $LIBS"
  local tmp="$LIBS.tmp.$$"
  rm -rf "$tmp"; mkdir -p "$tmp"
  mvn -B -q -f "$HERE/kafka/pom.xml" dependency:copy-dependencies \
    -DincludeScope=runtime -DoutputDirectory="$tmp" >&2 \
    || { rm -rf "$tmp"; die "could not resolve Kafka $KAFKA_VERSION from Maven Central"; }
  ls "$tmp"/kafka_2.13-"$KAFKA_VERSION".jar >/dev/null || die "kafka_2.13 jar missing after fetch"
  rm -rf "$LIBS"; mv "$tmp" "$LIBS"; touch "$LIBS/.complete"
}

free_ports() { # prints N distinct free loopback ports
  python3 - "$1" <<'PY'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket(); s.bind(("127.0.0.1", 0)); socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
PY
}

alive() { # pid: whether it runs. A process that exited is gone even while its entry waits
  # to be reaped (a zombie answers `kill -0`; here init reaps orphans up to ~2 s late).
  local st
  st=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
  st=${st##*) }
  [[ ${st:0:1} != Z ]]
}

node_running() { # node index
  local pidf="$DIR/node-$1/pid"
  [[ -f "$pidf" ]] && alive "$(cat "$pidf")"
}

start_node() { # node index
  local i=$1 nd="$DIR/node-$1"
  node_running "$i" && { log "node $i already running"; return 0; }
  mkdir -p "$nd/logs"
  # setsid: the broker survives the shell that started it and gets its own process group.
  setsid java -Xms128m -Xmx"$HEAP" -XX:+UseG1GC -XX:MaxGCPauseMillis=20 \
    -XX:TieredStopAtLevel=1 -Djava.awt.headless=true \
    -Dkafka.logs.dir="$nd/logs" -Dlog4j2.configurationFile="$HERE/kafka/log4j2.properties" \
    -cp "$LIBS/*" kafka.Kafka "$nd/server.properties" \
    >"$nd/logs/stdout.log" 2>&1 </dev/null &
  echo $! >"$nd/pid"
}

stop_node() { # node index, signal
  local i=$1 sig=${2:-TERM} pidf="$DIR/node-$1/pid"
  [[ -f "$pidf" ]] || return 0
  local pid; pid=$(cat "$pidf")
  if alive "$pid"; then
    kill -"$sig" "$pid" 2>/dev/null || true
    for _ in $(seq 1 300); do alive "$pid" || break; sleep 0.1; done
    if alive "$pid"; then log "node $i ignored SIG$sig; killing"; kill -KILL "$pid" 2>/dev/null || true; fi
    for _ in $(seq 1 50); do alive "$pid" || break; sleep 0.1; done
  fi
  rm -f "$pidf"
}

# Waits until every running node answers a metadata request and sees the expected number of
# brokers. A JVM tool is used so "up" means what a client would see.
wait_ready() { # expected broker count, timeout seconds
  local want=$1 deadline=$((SECONDS + $2)) bootstrap
  bootstrap=$(cat "$DIR/brokers")
  local auth=()
  [[ -f "$DIR/admin.properties" ]] && auth=(--command-config "$DIR/admin.properties")
  while ((SECONDS < deadline)); do
    for i in $(seq 1 "$(cat "$DIR/nodes")"); do
      if [[ -f "$DIR/node-$i/pid" ]] && ! node_running "$i"; then
        tail -n 40 "$DIR/node-$i/logs/server.log" "$DIR/node-$i/logs/stdout.log" >&2 || true
        log "error: node $i exited during start"
        return 1
      fi
    done
    local n
    n=$(timeout 20 java -Xmx128m -XX:TieredStopAtLevel=1 -cp "$LIBS/*" \
          -Dlog4j2.configurationFile="$HERE/kafka/log4j2.properties" -Dkafka.logs.dir="$DIR" \
          org.apache.kafka.tools.BrokerApiVersionsCommand --bootstrap-server "$bootstrap" "${auth[@]}" 2>/dev/null \
        | grep -c '(id: ' || true)
    if ((n >= want)); then return 0; fi
    sleep 0.5
  done
  log "error: cluster at $bootstrap not ready after $2 s"
  tail -n 40 "$DIR"/node-*/logs/server.log >&2 || true
  return 1
}

# The listener part of a node's server.properties: PLAINTEXT, or with KAFKA_SECURITY=scram
# SASL/SCRAM-SHA-512 for clients and between brokers, SASL/PLAIN (a static admin user) on
# the controller listener (SCRAM credentials live in the metadata log the controllers
# serve, so they cannot authenticate the controllers themselves), and the authorizer.
listener_properties() { # broker port, controller port, admin password ("" = PLAINTEXT)
  local bp=$1 cp=$2 pw=$3
  if [[ -z "$pw" ]]; then
    cat <<EOF
listeners=PLAINTEXT://127.0.0.1:$bp,CONTROLLER://127.0.0.1:$cp
advertised.listeners=PLAINTEXT://127.0.0.1:$bp
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
EOF
    return
  fi
  cat <<EOF
listeners=BROKER://127.0.0.1:$bp,CONTROLLER://127.0.0.1:$cp
advertised.listeners=BROKER://127.0.0.1:$bp
controller.listener.names=CONTROLLER
inter.broker.listener.name=BROKER
listener.security.protocol.map=BROKER:SASL_PLAINTEXT,CONTROLLER:SASL_PLAINTEXT
sasl.mechanism.inter.broker.protocol=SCRAM-SHA-512
listener.name.broker.sasl.enabled.mechanisms=SCRAM-SHA-512
listener.name.broker.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username="admin" password="$pw";
sasl.mechanism.controller.protocol=PLAIN
listener.name.controller.sasl.enabled.mechanisms=PLAIN
listener.name.controller.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required username="admin" password="$pw" user_admin="$pw";
authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer
super.users=User:admin
allow.everyone.if.no.acl.found=false
EOF
}

up() {
  local n=${1:-1}
  [[ "$n" =~ ^[0-9]+$ ]] && ((n >= 1 && n <= 5)) || die "broker count must be 1..5, got '$n'"
  fetch
  if [[ -f "$DIR/nodes" ]]; then
    for i in $(seq 1 "$(cat "$DIR/nodes")"); do
      node_running "$i" && die "a cluster is already running in $DIR (scripts/kafka.sh down first)"
    done
    rm -rf "$DIR"
  fi
  mkdir -p "$DIR"
  local ports; read -r -a ports <<<"$(free_ports $((2 * n)))"
  local cluster_id
  # Like Kafka's Uuid.randomUuid: never starting with '-', which the tool would read as
  # an option (1 id in 64 otherwise).
  cluster_id=$(python3 -c '
import base64, uuid
while True:
    i = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
    if not i.startswith("-"):
        print(i)
        break')
  local admin_pw="" scram=()
  case "$SECURITY" in
    none) ;;
    scram)
      admin_pw=$(python3 -c 'import secrets; print(secrets.token_hex(16))')
      scram=(--add-scram "SCRAM-SHA-512=[name=admin,password=$admin_pw]") ;;
    *) die "KAFKA_SECURITY must be scram or none, got '$SECURITY'" ;;
  esac
  local voters="" brokers="" rf=1 isr=1
  if ((n >= 3)); then rf=3; isr=2; elif ((n == 2)); then rf=2; isr=1; fi
  for i in $(seq 1 "$n"); do
    voters+="${voters:+,}$i@127.0.0.1:${ports[$((2 * i - 1))]}"
    brokers+="${brokers:+,}127.0.0.1:${ports[$((2 * i - 2))]}"
  done
  echo "$n" >"$DIR/nodes"; echo "$brokers" >"$DIR/brokers"
  if [[ -n "$admin_pw" ]]; then
    (umask 077
     printf '%s\n' "security.protocol=SASL_PLAINTEXT" "sasl.mechanism=SCRAM-SHA-512" \
       "sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username=\"admin\" password=\"$admin_pw\";" \
       >"$DIR/admin.properties"
     printf '%s\n' "NEARFIELD_KAFKA_PROPERTY_security_protocol=SASL_PLAINTEXT" \
       "NEARFIELD_KAFKA_PROPERTY_sasl_mechanism=SCRAM-SHA-512" \
       "NEARFIELD_KAFKA_PROPERTY_sasl_username=admin" \
       "NEARFIELD_KAFKA_PROPERTY_sasl_password=$admin_pw" >"$DIR/admin.env")
  fi
  for i in $(seq 1 "$n"); do
    local nd="$DIR/node-$i" bp=${ports[$((2 * i - 2))]} cp=${ports[$((2 * i - 1))]}
    mkdir -p "$nd/data" "$nd/logs"
    cat >"$nd/server.properties" <<EOF
process.roles=broker,controller
node.id=$i
controller.quorum.voters=$voters
$(listener_properties "$bp" "$cp" "$admin_pw")
log.dirs=$nd/data
num.partitions=1
default.replication.factor=$rf
min.insync.replicas=$isr
offsets.topic.replication.factor=$rf
offsets.topic.num.partitions=10
transaction.state.log.replication.factor=$rf
transaction.state.log.min.isr=$isr
transaction.state.log.num.partitions=10
share.coordinator.state.topic.replication.factor=$rf
share.coordinator.state.topic.min.isr=$isr
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=false
log.retention.hours=-1
log.cleaner.backoff.ms=1000
num.network.threads=2
num.io.threads=4
num.recovery.threads.per.data.dir=1
EOF
    java -Xmx256m -XX:TieredStopAtLevel=1 -cp "$LIBS/*" \
      -Dlog4j2.configurationFile="$HERE/kafka/log4j2.properties" -Dkafka.logs.dir="$nd/logs" \
      kafka.tools.StorageTool format -t "$cluster_id" -c "$nd/server.properties" "${scram[@]}" >"$nd/logs/format.log" 2>&1 \
      || { cat "$nd/logs/format.log" >&2; die "formatting node $i failed"; }
  done
  for i in $(seq 1 "$n"); do start_node "$i"; done
  if [[ -n "${NEARFIELD_KAFKA_OWNER_PID:-}" ]]; then
    # Watchdog: never leave a broker running after the process that asked for it.
    setsid nohup bash -c "while kill -0 $NEARFIELD_KAFKA_OWNER_PID 2>/dev/null; do sleep 1; done; \
      NEARFIELD_KAFKA_DIR='$DIR' '$HERE/kafka.sh' down" >/dev/null 2>&1 </dev/null &
    echo $! >"$DIR/watchdog.pid"
  fi
  wait_ready "$n" 120 || { down; exit 1; }
  log "Apache Kafka $KAFKA_VERSION up: $n node(s) in $DIR"
  echo "NEARFIELD_BROKERS=$brokers"
  if [[ -f "$DIR/admin.env" ]]; then cat "$DIR/admin.env"; fi
}

down() { # [--kill]
  local n sig=TERM
  case "${1:-}" in
    "") ;;
    --kill) sig=KILL ;;
    *) die "down: unknown option $1 (only --kill)" ;;
  esac
  [[ -f "$DIR/nodes" ]] || { rm -rf "$DIR"; return 0; }
  n=$(cat "$DIR/nodes")
  for i in $(seq 1 "$n"); do stop_node "$i" "$sig" & done
  wait
  # The owner's watchdog has nothing left to guard (unless it is what runs this): stopped,
  # so nothing of the cluster outlives `down`. Only if that pid is still this cluster's
  # watchdog (a stale file's pid may have been reused).
  local dog=
  [[ -f "$DIR/watchdog.pid" ]] && dog=$(cat "$DIR/watchdog.pid")
  if [[ -n "$dog" && "$dog" != "$$" && "$dog" != "$PPID" ]] \
    && grep -qF "$DIR" < <(tr '\0' ' ' <"/proc/$dog/cmdline" 2>/dev/null); then
    kill -TERM "$dog" 2>/dev/null || true
    for _ in $(seq 1 20); do alive "$dog" || break; sleep 0.1; done
  fi
  rm -rf "$DIR"
  log "cluster in $DIR stopped and removed"
}

acls() { # AclCommand arguments
  [[ -f "$DIR/brokers" ]] || die "no cluster in $DIR"
  fetch
  local auth=()
  [[ -f "$DIR/admin.properties" ]] && auth=(--command-config "$DIR/admin.properties")
  java -Xmx128m -XX:TieredStopAtLevel=1 -cp "$LIBS/*" \
    -Dlog4j2.configurationFile="$HERE/kafka/log4j2.properties" -Dkafka.logs.dir="$DIR" \
    org.apache.kafka.tools.AclCommand --bootstrap-server "$(cat "$DIR/brokers")" "${auth[@]}" "$@"
}

status() {
  [[ -f "$DIR/nodes" ]] || { echo "no cluster in $DIR"; return 0; }
  echo "brokers: $(cat "$DIR/brokers")"
  for i in $(seq 1 "$(cat "$DIR/nodes")"); do
    if node_running "$i"; then echo "node $i: running (pid $(cat "$DIR/node-$i/pid"))"; else echo "node $i: stopped"; fi
  done
}

cmd=${1:-}; shift || true
case "$cmd" in
  fetch) fetch ;;
  up) up "${1:-1}" ;;
  down) down "${1:-}" ;;
  status) status ;;
  acls) acls "$@" ;;
  stop-node)
    [[ -n "${1:-}" ]] || die "stop-node needs a node index"
    if [[ "${2:-}" == "--kill" ]]; then stop_node "$1" KILL; else stop_node "$1" TERM; fi ;;
  start-node)
    [[ -n "${1:-}" ]] || die "start-node needs a node index"
    [[ -f "$DIR/node-$1/server.properties" ]] || die "no node $1 in $DIR"
    fetch; start_node "$1" ;;
  *) sed -n '2,21p' "$0" >&2; exit 2 ;;
esac

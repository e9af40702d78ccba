#!/usr/bin/env bash
# A real single-node Apache Kafka 4.x broker (KRaft, broker+controller) on loopback,
# for the integration tests and benchmarks.
#
#   kafka.sh fetch            download the broker jars from Maven Central (idempotent)
#   kafka.sh start STATEDIR   format a fresh log dir under STATEDIR, start the broker on free
#                             ports, wait until it serves metadata; writes STATEDIR/bootstrap
#                             (host:port) and STATEDIR/pid
#   kafka.sh stop STATEDIR    SIGTERM, then SIGKILL after 20 s
#   kafka.sh kill STATEDIR    SIGKILL (fault tests)
#   kafka.sh restart STATEDIR start the stopped (or killed) broker of STATEDIR again: same
#                             server.properties, ports and data, nothing reformatted (fault
#                             tests: an outage, not a new cluster)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
lib="$here/target/dependency"
jopts=(-Xms256m -Xmx512m -XX:+UseG1GC)

fetch() {
  if [ -f "$lib/.complete" ]; then return 0; fi
  (cd "$here" && mvn -B -q dependency:copy-dependencies)
  touch "$lib/.complete"
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

start() {
  local dir=$1
  fetch
  mkdir -p "$dir"
  dir=$(cd "$dir" && pwd)
  rm -rf "$dir/data"
  local port ctrl
  port=$(free_port); ctrl=$(free_port)
  while [ "$ctrl" = "$port" ]; do ctrl=$(free_port); done
  cat > "$dir/server.properties" <<PROPS
process.roles=broker,controller
node.id=1
controller.quorum.bootstrap.servers=127.0.0.1:$ctrl
listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$ctrl
advertised.listeners=PLAINTEXT://127.0.0.1:$port
controller.listener.names=CONTROLLER
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs=$dir/data
num.partitions=4
auto.create.topics.enable=true
offsets.topic.replication.factor=1
offsets.topic.num.partitions=4
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
num.network.threads=2
num.io.threads=2
log.cleaner.dedupe.buffer.size=16777216
PROPS
  cat > "$dir/log4j2.properties" <<'PROPS'
rootLogger.level=WARN
rootLogger.appenderRef.stderr.ref=STDERR
appender.stderr.type=Console
appender.stderr.name=STDERR
appender.stderr.target=SYSTEM_ERR
appender.stderr.layout.type=PatternLayout
appender.stderr.layout.pattern=[%d] %p %m (%c)%n
PROPS
  local id
  id=$(java "${jopts[@]}" -cp "$lib/*" -Dlog4j2.configurationFile="$dir/log4j2.properties" kafka.tools.StorageTool random-uuid 2>/dev/null | tail -1)
  java "${jopts[@]}" -cp "$lib/*" -Dlog4j2.configurationFile="$dir/log4j2.properties" kafka.tools.StorageTool format --standalone -t "$id" -c "$dir/server.properties" > "$dir/format.log" 2>&1
  echo "127.0.0.1:$port" > "$dir/bootstrap"
  : > "$dir/broker.log"
  launch "$dir"
}

# Runs the broker of $1 (formatted, with server.properties and bootstrap) and waits until it
# serves metadata.
launch() {
  local dir=$1 port
  port=$(sed 's/.*://' "$dir/bootstrap")
  nohup java "${jopts[@]}" -Dlog4j2.configurationFile="$dir/log4j2.properties" -cp "$lib/*" \
    kafka.Kafka "$dir/server.properties" >> "$dir/broker.log" 2>&1 &
  echo $! > "$dir/pid"
  local deadline=$((SECONDS + 90))
  while :; do
    if ! kill -0 "$(cat "$dir/pid")" 2>/dev/null; then
      echo "kafka.sh: broker died during start; last lines of $dir/broker.log:" >&2
      tail -20 "$dir/broker.log" >&2; return 1
    fi
    if kcat -L -b "127.0.0.1:$port" -m 2 2>/dev/null | grep -q '1 brokers'; then break; fi
    if [ $SECONDS -ge $deadline ]; then
      echo "kafka.sh: broker not ready after 90 s" >&2; tail -20 "$dir/broker.log" >&2; return 1
    fi
    sleep 0.5
  done
  echo "127.0.0.1:$port"
}

restart() {
  local dir=$1
  if [ ! -f "$dir/server.properties" ] || [ ! -f "$dir/bootstrap" ] || [ ! -d "$dir/data" ]; then
    echo "kafka.sh: no broker to restart in $dir (kafka.sh start it first)" >&2; return 1
  fi
  dir=$(cd "$dir" && pwd)
  if [ -f "$dir/pid" ] && kill -0 "$(cat "$dir/pid")" 2>/dev/null; then
    echo "kafka.sh: the broker of $dir is running (pid $(cat "$dir/pid"))" >&2; return 1
  fi
  fetch
  launch "$dir"
}

stop() {
  local dir=$1 sig=${2:-TERM}
  [ -f "$dir/pid" ] || return 0
  local pid; pid=$(cat "$dir/pid")
  kill -"$sig" "$pid" 2>/dev/null || true
  for _ in $(seq 1 200); do kill -0 "$pid" 2>/dev/null || { rm -f "$dir/pid"; return 0; }; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null || true
  rm -f "$dir/pid"
}

case "${1:-}" in
  fetch) fetch ;;
  start) start "${2:?state dir}" ;;
  stop) stop "${2:?state dir}" TERM ;;
  kill) stop "${2:?state dir}" KILL ;;
  restart) restart "${2:?state dir}" ;;
  *) echo "usage: $0 fetch|start DIR|stop DIR|kill DIR|restart DIR" >&2; exit 2 ;;
esac

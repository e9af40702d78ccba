#!/usr/bin/env bash
# What TLS for gateways costs end to end: the city played flat out through intaked twice, over
# plain TCP and over TLS (listen.tls, TLS 1.3, P-256), against a real Kafka broker, verified
# both times. Prints per mode the rate, intaked's CPU per event and the ack latency, and keeps
# the last run's logs and table in bench/tls/. bench/RESULTS.md carries the figures, copied by
# hand with their date.
#
#   bench/tls.sh                 DURATION=20 CONNECTIONS=8 ROUNDS=2 (plain, tls alternating)
#   BUILD_DIR=build-bench        the build used (made here if missing)
#
# Both modes use the same intaked config, batch size and window; only listen.tls differs. CPU
# per event is the steadier figure on a shared machine (wall rates follow whatever else runs).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
BUILD_DIR=${BUILD_DIR:-$root/build-bench}
DURATION=${DURATION:-20}
CONNECTIONS=${CONNECTIONS:-8}
ROUNDS=${ROUNDS:-2}
out=${OUT_DIR:-$root/bench}/tls   # the last run's logs (bench/run.sh owns bench/results/)
work=$(mktemp -d /tmp/intake-tls-bench.XXXXXX)
rm -rf "$out"
mkdir -p "$out"
intaked_pid=
cleanup() {
  [ -n "$intaked_pid" ] && kill -TERM "$intaked_pid" 2>/dev/null && wait "$intaked_pid" 2>/dev/null
  "$root/tests/kafka/kafka.sh" stop "$work/kafka" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

cmake -S "$root" -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=Release -DINTAKE_WERROR=OFF -DINTAKE_TESTS=OFF >/dev/null  # as run.sh
cmake --build "$BUILD_DIR" -j"$(nproc)" --target intaked intake-bench >"$work/build.log" 2>&1 ||
  { tail -20 "$work/build.log"; exit 1; }
bench=$BUILD_DIR/bench/intake-bench
"$root/tests/tls/make-certs.sh" "$work/pki" >/dev/null
"$root/tests/kafka/kafka.sh" start "$work/kafka" >/dev/null
bootstrap=$(cat "$work/kafka/bootstrap")

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

run() { # $1 = mode (plain | tls), $2 = round
  local mode=$1 label=$1-$2 port prefix tls_yaml="" tls_args=()
  port=$(free_port)
  prefix=bench.tls.$$.$label
  if [ "$mode" = tls ]; then
    tls_yaml="  tls: {cert_file: $work/pki/server.pem, key_file: $work/pki/server.key, min_version: 1.3}"
    tls_args=(--tls-ca "$work/pki/ca.pem")
  fi
  cat >"$work/$label.yaml" <<EOF
listen:
  address: 127.0.0.1
  port: $port
$tls_yaml
gateway: {max_in_flight_batches: 8, max_batch_events: 1000}
kafka:
  mode: brokers
  brokers: "$bootstrap"
  properties: {linger.ms: 5}
log: {stats_interval: 5s}
$("$bench" routes --prefix "$prefix")
EOF
  "$BUILD_DIR/intaked" -c "$work/$label.yaml" >"$out/intaked-$label.log" 2>&1 &
  intaked_pid=$!
  for _ in $(seq 1 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
    sleep 0.1
  done
  "$bench" load --port "$port" --brokers "$bootstrap" --prefix "$prefix" --label "$label" \
    --connections "$CONNECTIONS" --duration "$DURATION" --partitions 4 \
    --watch "intaked=$intaked_pid" --summary "$out/summary-$label.txt" "${tls_args[@]}" \
    >"$out/$label.txt"
  kill -TERM "$intaked_pid"
  wait "$intaked_pid"
  intaked_pid=
  local s=$out/summary-$label.txt
  awk -F= -v l="$label" '
    $1 == l "_accepted_eps" { eps = $2 }
    $1 == l "_events_sent" { ev = $2 }
    $1 == l "_cpu_intaked" { cpu = $2 }
    $1 == l "_p50_ms" { p50 = $2 }
    $1 == l "_p99_ms" { p99 = $2 }
    END { printf "| %s | %s | %s | %s | %s | %s |\n", l, eps, ev, (ev > 0 ? sprintf("%.2f", cpu * 1e6 / ev) : "?"), p50, p99 }
  ' "$s" | tee -a "$out/table.md"
  grep -q "verify: PASS" "$out/$label.txt" || { echo "verify failed: $out/$label.txt"; exit 1; }
}

echo "| run | events/s | events | intaked CPU µs/event | ack p50 ms | ack p99 ms |" | tee "$out/table.md"
echo "|---|---|---|---|---|---|" | tee -a "$out/table.md"
for r in $(seq 1 "$ROUNDS"); do
  run plain "$r"
  run tls "$r"
done
echo "logs and summaries: $out"

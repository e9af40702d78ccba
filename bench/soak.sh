#!/usr/bin/env bash
# The soak: intaked under a steady city load long enough for the dedup table to fill, against
# a real Kafka broker, with the verifier on. Builds (Release) what is missing, starts a broker
# (tests/kafka/kafka.sh, fresh state), one intaked with dedup snapshots on, and plays the city
# mix (retransmits, late retransmits up to 30 s, disconnects, storms, flapping, invalid events)
# at RATE events/s for DURATION s. Meanwhile it samples intaked every 10 s (RSS, open fds,
# /metrics: the effective dedup window, keys held, evictions), probes the admin listener every
# 100 ms (it answers on the loop thread), and reads intaked's own loop measurements at the end.
#
# Pass, all of:
#   - the verifier: every event accepted is in Kafka exactly once, nothing lost, order kept;
#   - no key evicted by force (intake_dedup_forced_evictions_total = 0);
#   - RSS flat: the last sample within 5% (+8 MiB) of the sample taken when the table filled;
#   - no loop stall above STALL_BOUND_MS: no event-loop iteration used more CPU than that
#     (intake_loop_cpu_max_seconds; its wall time, which a crowded machine stretches, and the
#     slowest answer of the admin listener to a probe every 100 ms are reported beside it);
#   - the table filled (the effective window went below the configured one), unless
#     EXPECT_FILL=0.
# Writes bench/results/soak.txt (verdict and figures), bench/results/soak.csv (the samples),
# bench/results/soak-minutes.csv (ack latency per minute) and bench/soak.png (gnuplot, when
# present); bench/RESULTS.md quotes them. Exit 0 on pass.
#
# Settings (environment):
#   RATE=20000  DURATION=600  CONNECTIONS=8  BATCH=200  PARTITIONS=4
#   DEDUP_WINDOW=10m  DEDUP_MEMORY=64MiB   (64 MiB holds ~3.8 M keys: at 20,000 events/s the
#                                          table fills after ~3 minutes and the effective window
#                                          settles near 3 minutes, above the mix's 30 s of late
#                                          retransmits)
#   SNAPSHOT_INTERVAL=30s  STALL_BOUND_MS=50  EXPECT_FILL=1
#   KAFKA_PROPS="linger.ms=5"  LOAD_ARGS=""   BUILD_DIR=build-bench  OUT_DIR=bench  KEEP=0
#   The test suite runs a short version of the same situation: tests/integration/it_dedup_full.c.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
BUILD_DIR=${BUILD_DIR:-$root/build-bench}
OUT_DIR=${OUT_DIR:-$root/bench}
RATE=${RATE:-20000}
DURATION=${DURATION:-600}
CONNECTIONS=${CONNECTIONS:-8}
BATCH=${BATCH:-200}
PARTITIONS=${PARTITIONS:-4}
DEDUP_WINDOW=${DEDUP_WINDOW:-10m}
DEDUP_MEMORY=${DEDUP_MEMORY:-64MiB}
SNAPSHOT_INTERVAL=${SNAPSHOT_INTERVAL:-30s}
STALL_BOUND_MS=${STALL_BOUND_MS:-50}
EXPECT_FILL=${EXPECT_FILL:-1}
KAFKA_PROPS=${KAFKA_PROPS:-linger.ms=5}
LOAD_ARGS=${LOAD_ARGS:-}
KEEP=${KEEP:-0}

say() { printf '\n== %s\n' "$*"; }
work=$(mktemp -d /tmp/intake-soak.XXXXXX)
kafka_dir=$work/kafka
intaked_pid= sampler_pid= prober_pid=
cleanup() {
  for p in $sampler_pid $prober_pid; do kill "$p" 2>/dev/null || true; done
  if [ -n "$intaked_pid" ] && kill -0 "$intaked_pid" 2>/dev/null; then
    kill -TERM "$intaked_pid" 2>/dev/null || true
    wait "$intaked_pid" 2>/dev/null || true
  fi
  "$root/tests/kafka/kafka.sh" stop "$kafka_dir" >/dev/null 2>&1 || true
  if [ "$KEEP" = 1 ]; then echo "work dir kept: $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT

say "build (Release) in $BUILD_DIR"
cmake -S "$root" -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=Release -DINTAKE_WERROR=OFF \
  -DINTAKE_TESTS=OFF >"$work/cmake.log" 2>&1 || { cat "$work/cmake.log"; exit 1; }
cmake --build "$BUILD_DIR" -j"$(nproc)" --target intaked intake-bench >"$work/build.log" 2>&1 ||
  { tail -40 "$work/build.log"; exit 1; }
bench=$BUILD_DIR/bench/intake-bench
intaked=$BUILD_DIR/intaked
if ! command -v gnuplot >/dev/null && command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q gnuplot-nox >"$work/apt.log" 2>&1 ||
    echo "warning: apt-get install gnuplot-nox failed; no plot"
fi

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

say "Kafka broker (fresh state in $kafka_dir)"
bootstrap=$("$root/tests/kafka/kafka.sh" start "$kafka_dir" | tail -1)
broker_pid=$(cat "$kafka_dir/pid")
prefix=soak.$(date +%s).$RANDOM
port=$(free_port) admin_port=$(free_port)
props_yaml=""
for kv in $KAFKA_PROPS; do props_yaml+="    ${kv%%=*}: ${kv#*=}"$'\n'; done
cat >"$work/intaked.yaml" <<EOF
# written by bench/soak.sh
listen:
  address: 127.0.0.1
  port: $port
gateway:
  max_in_flight_batches: 8
  max_batch_events: 1000
kafka:
  mode: brokers
  brokers: "$bootstrap"
  delivery_timeout: 30s
  properties:
$props_yaml
dedup:
  window: $DEDUP_WINDOW
  memory: $DEDUP_MEMORY
  snapshot_path: $work/dedup.snap
  snapshot_interval: $SNAPSHOT_INTERVAL
admin:
  address: 127.0.0.1
  port: $admin_port
log:
  level: info
  stats_interval: 10s
$("$bench" routes --prefix "$prefix")
EOF
"$intaked" --check-config "$work/intaked.yaml" | tee "$work/check.txt"
"$intaked" -c "$work/intaked.yaml" >"$work/intaked.log" 2>&1 &
intaked_pid=$!
for _ in $(seq 1 300); do
  (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
  kill -0 "$intaked_pid" 2>/dev/null || { tail -20 "$work/intaked.log"; exit 1; }
  sleep 0.1
done

# Samples every 10 s: t, rss_kib, fds, effective window, keys held, evictions, forced.
sampler() {
  local t0=$SECONDS m
  echo "t_s,rss_mib,fds,effective_window_s,dedup_entries,dedup_evictions,forced_evictions,delivered"
  while kill -0 "$intaked_pid" 2>/dev/null; do
    m=$(python3 -c 'import sys, urllib.request
print(urllib.request.urlopen(sys.argv[1], timeout=5).read().decode())' \
      "http://127.0.0.1:$admin_port/metrics" 2>/dev/null || true)
    awk -v t=$((SECONDS - t0)) -v rss="$(awk '/^VmRSS/{print $2}' "/proc/$intaked_pid/status" 2>/dev/null)" \
      -v fds="$(ls "/proc/$intaked_pid/fd" 2>/dev/null | wc -l)" '
      /^intake_dedup_effective_window_seconds /{w=$2} /^intake_dedup_entries /{e=$2}
      /^intake_dedup_evictions_total /{v=$2} /^intake_dedup_forced_evictions_total /{f=$2}
      /^intake_events_delivered_total /{d=$2}
      END{printf "%d,%.1f,%d,%.1f,%d,%d,%d,%d\n", t, rss/1024, fds, w, e, v, f, d}' <<<"$m"
    sleep 10
  done
}
# Probes the loop every 100 ms: the slowest admin answer per 10 s, in ms.
prober() {
  python3 - "$admin_port" <<'PY'
import sys, time, http.client
port = int(sys.argv[1]); worst = 0.0; t_mark = time.monotonic()
while True:
    t = time.monotonic()
    try:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        c.request("GET", "/healthz"); c.getresponse().read(); c.close()
    except Exception:
        sys.exit(0)
    worst = max(worst, (time.monotonic() - t) * 1000)
    if time.monotonic() - t_mark >= 10:
        print(f"{worst:.1f}", flush=True); worst = 0.0; t_mark = time.monotonic()
    time.sleep(0.1)
PY
}
sampler >"$work/samples.csv" &
sampler_pid=$!
prober >"$work/stalls.txt" &
prober_pid=$!

say "the city at $RATE events/s for $DURATION s (dedup $DEDUP_MEMORY, window $DEDUP_WINDOW)"
set +e
"$bench" load --port "$port" --brokers "$bootstrap" --prefix "$prefix" --label soak \
  --connections "$CONNECTIONS" --rate "$RATE" --duration "$DURATION" --batch "$BATCH" \
  --partitions "$PARTITIONS" --csv "$work/load.csv" --summary "$work/summary.txt" \
  --watch "broker=$broker_pid" --watch "intaked=$intaked_pid" $LOAD_ARGS >"$work/load.txt"
load_rc=$?
set -e
grep -E '^(result|latency|verify|cpu over)' "$work/load.txt" || tail -20 "$work/load.txt"
sleep 11 # one more sample after the load
python3 -c 'import sys, urllib.request
print(urllib.request.urlopen(sys.argv[1], timeout=10).read().decode())' \
  "http://127.0.0.1:$admin_port/metrics" >"$work/final.metrics" 2>/dev/null || true
kill "$sampler_pid" "$prober_pid" 2>/dev/null || true
sampler_pid= prober_pid=
kill -TERM "$intaked_pid"
wait "$intaked_pid" || echo "warning: intaked exited with $?"
intaked_pid=

# ---- verdict ---------------------------------------------------------------------------------
mkdir -p "$OUT_DIR/results"
cp "$work/samples.csv" "$OUT_DIR/results/soak.csv"
# ack latency per minute from the per-second CSV: the worst p99 and max of each minute
awk -F, 'NR > 1 { m = int($1 / 60); if ($7 > p99[m]) p99[m] = $7; if ($8 > mx[m]) mx[m] = $8;
  acc[m] += $2; n[m]++; if (m > last) last = m }
  END { print "minute,accepted_eps,ack_p99_ms_worst,ack_max_ms"
        for (m = 0; m <= last; m++) if (n[m]) printf "%d,%.0f,%.1f,%.1f\n", m, acc[m] / n[m], p99[m], mx[m] }' \
  "$work/load.csv" >"$OUT_DIR/results/soak-minutes.csv"
window_s=$(awk -F, 'NR == 2 {print $4}' "$work/samples.csv")
fill_row=$(awk -F, -v w="$window_s" 'NR > 2 && $4 < w {print; exit}' "$work/samples.csv")
last_row=$(tail -1 "$work/samples.csv")
rss_fill=$(cut -d, -f2 <<<"${fill_row:-$(sed -n 2p "$work/samples.csv")}")
rss_last=$(cut -d, -f2 <<<"$last_row")
forced=$(cut -d, -f7 <<<"$last_row")
eff_min=$(awk -F, 'NR > 1 && (m == "" || $4 < m) {m = $4} END {print m}' "$work/samples.csv")
fds_min=$(awk -F, 'NR > 1 && (m == "" || $3 < m) {m = $3} END {print m}' "$work/samples.csv")
fds_max=$(awk -F, 'NR > 1 && $3 > m {m = $3} END {print m}' "$work/samples.csv")
stall=$(sort -n "$work/stalls.txt" | tail -1)
mget() { awk -v k="$1" '$1 == k {print $2}' "$work/final.metrics"; }
loop_cpu_ms=$(awk -v s="$(mget intake_loop_cpu_max_seconds)" 'BEGIN{printf "%.1f", s * 1000}')
loop_busy_ms=$(awk -v s="$(mget intake_loop_busy_max_seconds)" 'BEGIN{printf "%.1f", s * 1000}')
loop_n=$(mget intake_loop_busy_seconds_count)
le50=$(mget 'intake_loop_busy_seconds_bucket{le="0.05"}') le100=$(mget 'intake_loop_busy_seconds_bucket{le="0.1"}')
loop_over_50=$(( ${loop_n:-0} - ${le50:-0} )) loop_over_100=$(( ${loop_n:-0} - ${le100:-0} ))
snaps=$(grep -c 'msg="dedup snapshot written"' "$work/intaked.log" || true)
step_max=$(grep 'msg="dedup snapshot written"' "$work/intaked.log" |
  sed -n 's/.*step_max_us=\([0-9]*\).*/\1/p' | sort -n | tail -1)
loop_max=$(grep 'msg="dedup snapshot written"' "$work/intaked.log" |
  sed -n 's/.* loop_us=\([0-9]*\).*/\1/p' | sort -n | tail -1)
warned=$(grep -c 'msg="dedup window shrunk"' "$work/intaked.log" || true)
verdict=PASS reasons=()
grep -q '^verify: PASS' "$work/load.txt" || { verdict=FAIL; reasons+=("verifier"); }
[ "$load_rc" = 0 ] || { verdict=FAIL; reasons+=("intake-bench exit $load_rc"); }
[ "${forced:-1}" = 0 ] || { verdict=FAIL; reasons+=("forced evictions $forced"); }
awk -v a="$rss_fill" -v b="$rss_last" 'BEGIN{exit !(b <= a * 1.05 + 8)}' ||
  { verdict=FAIL; reasons+=("RSS grew $rss_fill -> $rss_last MiB"); }
awk -v s="${loop_cpu_ms:-1e9}" -v b="$STALL_BOUND_MS" 'BEGIN{exit !(s > 0 && s <= b)}' ||
  { verdict=FAIL; reasons+=("loop stall: an iteration used ${loop_cpu_ms} ms of CPU > $STALL_BOUND_MS"); }
if [ "$EXPECT_FILL" = 1 ] && [ -z "$fill_row" ]; then verdict=FAIL; reasons+=("the table never filled"); fi
{
  echo "soak: $verdict ${reasons[*]:-}"
  echo "when: $(date -u +%Y-%m-%dT%H:%M:%SZ) on $(nproc) cores; rate $RATE events/s for $DURATION s; dedup $DEDUP_MEMORY, window $DEDUP_WINDOW; snapshots every $SNAPSHOT_INTERVAL"
  grep -E '^(result|latency|verify|cpu over)' "$work/load.txt" || true
  grep -m1 "^dedup:" "$work/check.txt" || true
  echo "table filled at: $(cut -d, -f1 <<<"${fill_row:-never}") s; effective window min ${eff_min} s, at the end $(cut -d, -f4 <<<"$last_row") s; 'dedup window shrunk' warnings: $warned"
  echo "evictions $(cut -d, -f6 <<<"$last_row"), forced $forced; keys held at the end $(cut -d, -f5 <<<"$last_row")"
  echo "RSS when the table filled $rss_fill MiB, at the end $rss_last MiB; fds $fds_min..$fds_max"
  echo "loop: $loop_n iterations; the most CPU one used ${loop_cpu_ms} ms (bound $STALL_BOUND_MS ms); the longest took ${loop_busy_ms} ms of wall time (descheduling included); $loop_over_50 over 50 ms, $loop_over_100 over 100 ms; slowest admin answer to a probe every 100 ms: ${stall} ms"
  echo "dedup snapshots: $snaps written, longest export step ${step_max:-?} us, export loop time per snapshot up to ${loop_max:-?} us"
} | tee "$OUT_DIR/results/soak.txt"
if command -v gnuplot >/dev/null; then
  gnuplot <<EOF || echo "warning: gnuplot failed; no plot"
set terminal pngcairo size 900,500 noenhanced
set output "$OUT_DIR/soak.png"
set datafile separator ","
set key center right
set xlabel "seconds"
set ylabel "effective dedup window (s)"
set y2label "RSS (MiB)"
set y2tics
set title "soak: $RATE events/s, dedup $DEDUP_MEMORY / $DEDUP_WINDOW: $verdict"
plot "$OUT_DIR/results/soak.csv" using 1:4 with lines title "effective window (s)", \
     "" using 1:2 axes x1y2 with lines title "RSS (MiB)"
EOF
fi
[ "$verdict" = PASS ]

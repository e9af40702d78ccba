#!/usr/bin/env bash
# Tests the verifier of intake-bench: builds intaked from a copy of src/ with one deliberate
# bug at a time and checks that `intake-bench load` then FAILs (and PASSes on the real daemon).
# Nothing in the working tree is changed. A mutant whose patch no longer applies (src/ moved
# on) is reported as SKIP.
#
#   bench/mutants.sh            needs a built build-bench/ (bench/run.sh makes one) and Kafka jars
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
BUILD_DIR=${BUILD_DIR:-$root/build-bench}
bench=$BUILD_DIR/bench/intake-bench
[ -x "$bench" ] || { echo "build intake-bench first (bench/run.sh)"; exit 1; }
work=$(mktemp -d /tmp/intake-mutants.XXXXXX)
pid=
cleanup() {
  [ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
  "$root/tests/kafka/kafka.sh" stop "$work/kafka" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

# name | file | perl substitution (-0777: the whole file) | load options that expose it
mutants=(
  "real daemon|||--duration 10 --rate 30000"
  "lost record: produce skipped, ACCEPTED anyway|src/pipeline/pipeline.c|s/(  for \(size_t t = 0; t < n; t\+\+\) \{\n)/static unsigned long mut_n;\n\$1    if (++mut_n % 20000 == 0) continue;\n/|--duration 10 --rate 30000"
  "reordered: a batch produced backwards|src/pipeline/pipeline.c|s/(Pass 2: dedup, route, produce\. \*\/\n  )for \(uint32_t i = 0; i < n; i\+\+\) \{/\$1for (uint32_t i = n; i-- > 0;) {/|--duration 10 --rate 30000"
  "forgetful dedup: sequenced keys not kept by id|src/dedup/dedup.c|s/  ev_commit\(d, p, tick\);\n  if \(!p->seq\)\n    return;/  if (!p->seq) {\n    ev_commit(d, p, tick);\n    return;\n  }/|--duration 15 --rate 20000 --storm-cameras 200 --storm-period-ms 50 --late-retransmit 0.05"
  "leaky dedup: every 50th duplicate taken for new|src/dedup/dedup.c|s/  return ev_seen\(d, p, tick\) \? INTAKE_DEDUP_DUPLICATE : INTAKE_DEDUP_NEW;/  static unsigned mut_d;\n  if (ev_seen(d, p, tick)) return ++mut_d % 50 ? INTAKE_DEDUP_DUPLICATE : INTAKE_DEDUP_NEW;\n  return INTAKE_DEDUP_NEW;/|--duration 10 --rate 30000"
)

# One copy of the sources, built once; each mutant patches one file and rebuilds incrementally.
dir=$work/src
mkdir -p "$dir"
cp -r "$root/CMakeLists.txt" "$root/src" "$root/proto" "$dir/"
cp -r "$dir/src" "$work/pristine"
cmake -S "$dir" -B "$dir/b" -DCMAKE_BUILD_TYPE=Release -DINTAKE_WERROR=OFF -DINTAKE_TESTS=OFF >/dev/null
bootstrap=$("$root/tests/kafka/kafka.sh" start "$work/kafka" | tail -1)
fails=0
skips=0
last=
for m in "${mutants[@]}"; do
  IFS='|' read -r name file subst opts <<<"$m"
  [ -n "$last" ] && cp "$work/pristine/${last#src/}" "$dir/$last" # undo the previous mutant
  last=$file
  if [ -n "$file" ]; then
    before=$(md5sum <"$dir/$file")
    perl -0777 -pi -e "$subst" "$dir/$file"
    if [ "$(md5sum <"$dir/$file")" = "$before" ]; then echo "SKIP  $name (patch does not apply)"; skips=$((skips + 1)); continue; fi
  fi
  cmake --build "$dir/b" -j"$(nproc)" --target intaked >"$dir/build.log" 2>&1 ||
    { echo "SKIP  $name (does not build)"; tail -5 "$dir/build.log"; skips=$((skips + 1)); continue; }
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  prefix=mutant.$RANDOM
  { printf 'listen:\n  port: %s\nkafka:\n  mode: brokers\n  brokers: "%s"\n' "$port" "$bootstrap"
    "$bench" routes --prefix "$prefix"; } >"$dir/intaked.yaml"
  "$dir/b/intaked" -c "$dir/intaked.yaml" >"$dir/intaked.log" 2>&1 &
  pid=$!
  sleep 1
  set +e
  # shellcheck disable=SC2086
  "$bench" load --port "$port" --brokers "$bootstrap" --prefix "$prefix" $opts >"$dir/load.txt" 2>&1
  rc=$?
  set -e
  kill "$pid"; wait "$pid" 2>/dev/null || true; pid=
  verdict=$(grep -m1 '^verify: \(PASS\|FAIL\)' "$dir/load.txt" | cut -d' ' -f2)
  why=$(grep -E '^verify: (exactly|content|answers)' "$dir/load.txt" | tr '\n' ' ' | sed 's/verify: //g')
  want=FAIL; [ -z "$file" ] && want=PASS
  if [ "$verdict" = "$want" ]; then echo "ok    $name: verifier says $verdict"
  else echo "WRONG $name: verifier says ${verdict:-nothing} (rc $rc), expected $want: $why"; fails=$((fails + 1)); fi
done
if [ $fails != 0 ]; then echo "mutants: $fails wrong, $skips skipped"; exit 1; fi
echo "mutants: every verdict as expected ($skips skipped)"

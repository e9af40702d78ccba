#!/usr/bin/env bash
# The whole test suite: installs what is missing (Debian packages, the Kafka broker jars from
# Maven Central), builds with -Werror, and runs unit and integration tests against a real Kafka
# broker that CTest starts on loopback and stops afterwards; then the same suite again built
# with AddressSanitizer + UndefinedBehaviorSanitizer, valgrind memcheck over the unit tests, and
# a short libFuzzer run of every fuzz target (tests/fuzz/run.sh, clang, into build-fuzz); last
# the container image, built with podman and run in embedded mode (tests/container.sh: ~2.5 min
# the first time on a machine, ~1.5 min after a source change, seconds when nothing changed).
#
#   scripts/test.sh            everything (what CI runs)
#   scripts/test.sh --quick    one build, no sanitizers, no valgrind, no fuzzing, no container
#   INTAKE_CONTAINER_TEST=0    leaves the container out of the full run (=1 adds it to --quick)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
quick=0
[ "${1:-}" = "--quick" ] && quick=1
bash "$root/scripts/deps.sh" --test
bash "$root/tests/kafka/kafka.sh" fetch
jobs=$(nproc)

run_suite() {
  local dir=$1; shift
  cmake -S "$root" -B "$dir" -DINTAKE_WERROR=ON "$@" >/dev/null
  cmake --build "$dir" -j"$jobs"
  # Tests are independent (own topics, free ports), so they run two at a time.
  (cd "$dir" && ctest --output-on-failure --timeout 300 -j"$jobs")
}

echo "== build + tests (RelWithDebInfo, -Werror)"
run_suite "$root/build-test" -DCMAKE_BUILD_TYPE=RelWithDebInfo
if [ $quick = 1 ]; then
  if [ "${INTAKE_CONTAINER_TEST:-0}" = 1 ]; then
    echo "== container image"
    bash "$root/tests/container.sh"
  fi
  exit 0
fi

echo "== build + tests under ASan + UBSan"
ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
  run_suite "$root/build-asan" -DCMAKE_BUILD_TYPE=Debug -DINTAKE_SANITIZE=ON

echo "== valgrind memcheck over the unit tests"
for t in "$root"/build-test/tests/test_*; do
  [ -x "$t" ] || continue
  valgrind -q --error-exitcode=1 --leak-check=full --errors-for-leak-kinds=definite "$t" >/dev/null \
    || { echo "valgrind: errors in $(basename "$t")"; exit 1; }
done

echo "== fuzz: every libFuzzer target for ${INTAKE_FUZZ_SECONDS:-20} s"
JOBS=$jobs bash "$root/tests/fuzz/run.sh" "${INTAKE_FUZZ_SECONDS:-20}"

if [ "${INTAKE_CONTAINER_TEST:-1}" != 0 ]; then
  echo "== container image: podman build, embedded run, health, /metrics, an event in and out"
  INTAKE_SEND="$root/build-test/intake-send" bash "$root/tests/container.sh"
fi
echo "== all tests passed"

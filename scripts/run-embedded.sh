#!/usr/bin/env bash
# Quick start: installs what is missing, builds intaked (with intake-send and intake-tail) and
# runs it on the shipped config (conf/intaked.yaml: embedded Kafka, gateways on 127.0.0.1:7400).
# Extra arguments go to intaked.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
bash "$root/scripts/deps.sh"
cmake -S "$root" -B "$root/build" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DINTAKE_TESTS=OFF >/dev/null
# intake-send and intake-tail too: the README's first event goes in and out with them.
cmake --build "$root/build" -j"$(nproc)" --target intaked intake-send intake-tail >/dev/null
cd "$root"
exec "$root/build/intaked" -c "$root/conf/intaked.yaml" "$@"

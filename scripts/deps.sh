#!/usr/bin/env bash
# Installs the Debian 12 packages intake needs to build, test and run. Idempotent: does nothing
# when everything is already there. Needs root (or sudo).
set -euo pipefail
pkgs=(build-essential cmake pkg-config libuv1-dev librdkafka-dev libprotobuf-c-dev
      protobuf-c-compiler libzstd-dev libyaml-dev libxxhash-dev libmicrohttpd-dev
      libcmocka-dev libssl-dev libjansson-dev kcat python3)
# clang + libclang-rt-14-dev: the libFuzzer targets (tests/fuzz/) with ASan + UBSan; Debian's
# clang-14 does not pull in the compiler-rt runtimes (fuzzer, asan, ubsan) by itself.
[ "${1:-}" = "--test" ] && pkgs+=(openjdk-17-jre-headless maven clang libclang-rt-14-dev valgrind openssl)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
# A JDK or Maven installed outside Debian's packages (e.g. by the machine image) is fine too.
if [ "${1:-}" = "--test" ]; then
  keep=()
  for p in "${missing[@]}"; do
    case "$p" in
      openjdk-17-jre-headless) command -v java >/dev/null || keep+=("$p") ;;
      maven) command -v mvn >/dev/null || keep+=("$p") ;;
      *) keep+=("$p") ;;
    esac
  done
  missing=("${keep[@]+"${keep[@]}"}")
fi
[ ${#missing[@]} -eq 0 ] && exit 0
sudo=""
[ "$(id -u)" = 0 ] || sudo=sudo
echo "deps.sh: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null

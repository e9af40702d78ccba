#!/usr/bin/env bash
# `intaked --check-config` catches what only librdkafka or OpenSSL can judge (a missing
# sasl.password, an unreadable ssl.ca.location, an unknown SASL mechanism, a gateway TLS key
# that does not match its certificate) with exit 1 and a message naming it, and accepts the
# shipped file and a good TLS setup. Run by CTest: check_config.sh INTAKED SOURCE_DIR
set -euo pipefail
intaked=$1 src=$2
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
"$src/tests/tls/make-certs.sh" "$dir/pki" >/dev/null

fails=0
expect() { # want_rc needle yaml
  printf '%s\n' "$3" > "$dir/c.yaml"
  local rc=0 out
  out=$("$intaked" --check-config "$dir/c.yaml" 2>&1) || rc=$?
  if [ "$rc" != "$1" ] || ! grep -qF -- "$2" <<<"$out"; then
    echo "FAIL: want rc $1 and \"$2\", got rc $rc: $out"; echo "$3"; fails=$((fails + 1))
  fi
  if grep -q 'level=' <<<"$out"; then
    echo "FAIL: --check-config logged instead of staying quiet: $out"; fails=$((fails + 1))
  fi
}
brokers=$'kafka:\n  mode: brokers\n  brokers: 127.0.0.1:9\n  properties:'
expect 1 "sasl.username and sasl.password must be set" \
  "$brokers"$'\n    security.protocol: SASL_SSL\n    sasl.mechanisms: PLAIN\n    sasl.username: intake'
expect 1 "ssl.ca.location" \
  "$brokers"$'\n    security.protocol: SSL\n    ssl.ca.location: /nonexistent/ca.pem'
expect 1 "Unsupported SASL mechanism" \
  "$brokers"$'\n    security.protocol: SASL_PLAINTEXT\n    sasl.mechanisms: FOO'
expect 0 ": ok" \
  "$brokers"$'\n    security.protocol: SASL_SSL\n    sasl.mechanisms: PLAIN\n    sasl.username: intake\n    sasl.password: x\n    ssl.ca.location: '"$dir/pki/ca.pem"
expect 1 "key does not match" \
  $'listen:\n  tls:\n    cert_file: '"$dir/pki/server.pem"$'\n    key_file: '"$dir/pki/other-ca.key"
expect 0 ": ok" \
  $'listen:\n  tls:\n    cert_file: '"$dir/pki/server.pem"$'\n    key_file: '"$dir/pki/server.key"$'\n    client_ca_file: '"$dir/pki/ca.pem"
# the rate a dedup memory holds for its window: 16 MiB = 262,144 buckets of 5 slots, 72% of
# them = 943,718 events; over 600 s, 1,572 a second
expect 0 "holds 943718 events: 1572 new events/s for the 600 s window" \
  $'dedup:\n  memory: 16MiB\n  window: 10m'
out=$("$intaked" --check-config "$src/conf/intaked.yaml") || { echo "FAIL: shipped config: $out"; fails=$((fails + 1)); }
[ $fails -eq 0 ] && echo "check_config: PASS"
exit $fails

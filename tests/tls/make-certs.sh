#!/usr/bin/env bash
# Makes a throwaway PKI for the TLS tests (gateway TLS and Kafka SSL), with the openssl CLI:
#
#   make-certs.sh DIR [GATEWAY_ID ...]
#
#   DIR/ca.pem, ca.key            a CA (EC P-256, 2 days)
#   DIR/server.pem, server.key    signed by it, for 127.0.0.1, ::1 and localhost
#   DIR/other-ca.pem              an unrelated CA (a certificate it signs must be refused)
#   DIR/<id>.pem, <id>.key        a client certificate per gateway id (subject CN = id, and id
#                                 as a DNS name), signed by ca
#   DIR/rogue.pem, rogue.key      a client certificate with CN "rogue" signed by other-ca
#
# Keys are unencrypted PKCS#8. Idempotent: an existing DIR/ca.pem is kept, and so is every
# certificate already there. Everything is valid for 2 days from its creation.
set -euo pipefail
dir=$1; shift
mkdir -p "$dir"
cd "$dir"
days=2

key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; }

ca() { # name cn
  [ -f "$1.pem" ] && return 0
  key "$1.key"
  openssl req -x509 -new -key "$1.key" -sha256 -days "$days" -subj "/CN=$2" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -out "$1.pem" 2>/dev/null
}

leaf() { # name cn san usage ca
  [ -f "$1.pem" ] && return 0
  key "$1.key"
  openssl req -new -key "$1.key" -subj "/CN=$2" -out "$1.csr" 2>/dev/null
  printf 'basicConstraints=CA:FALSE\nsubjectAltName=%s\nextendedKeyUsage=%s\n' "$3" "$4" > "$1.ext"
  openssl x509 -req -in "$1.csr" -CA "$5.pem" -CAkey "$5.key" -CAcreateserial -sha256 \
    -days "$days" -extfile "$1.ext" -out "$1.pem" 2>/dev/null
  rm -f "$1.csr" "$1.ext"
}

ca ca "intake test CA"
ca other-ca "intake unrelated CA"
leaf server localhost "DNS:localhost,IP:127.0.0.1,IP:::1" serverAuth ca
leaf rogue rogue "DNS:rogue" clientAuth other-ca
for id in "$@"; do
  leaf "$id" "$id" "DNS:$id" clientAuth ca
done

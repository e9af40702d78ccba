#!/usr/bin/env bash
# The container image, built and run: installs podman (rootful; there is no Docker daemon here),
# builds a debian:12-slim stand-in with debootstrap when podman has none (nothing can be pulled;
# kept in podman's storage for the next run), builds docker/Dockerfile, runs the image in
# embedded mode the way a deployment would (read-only root, no capabilities, as user intake),
# and checks: the HEALTHCHECK passes, /metrics answers on the published admin port, one event
# sent with the image's intake-send is accepted (and its retransmit answered duplicate), the
# image's intake-tail reads it back out of the embedded Kafka, and SIGTERM exits 0.
# ../shared/containers.md has the background (why runc, the ulimits, --format docker).
#
#   tests/container.sh          as root; scripts/test.sh runs it (INTAKE_CONTAINER_TEST=0 skips)
#
# Environment: INTAKE_CONTAINER_STATE (default build-container/: containers.conf, the config)
# and INTAKE_DEBIAN_MIRROR (default: the host's Debian mirror).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
state=${INTAKE_CONTAINER_STATE:-$root/build-container}
image=localhost/intake/intaked:test
base=localhost/debian:12-slim
name=intake-ct-$$
t0=$SECONDS
say() { printf 'container.sh [%3ds] %s\n' $((SECONDS - t0)) "$*"; }
die() { say "FAIL: $*"; [ -n "${logs_on_fail:-}" ] && podman logs "$name" 2>&1 | tail -30; exit 1; }

[ "$(id -u)" = 0 ] || { echo "container.sh: needs root (rootful podman)" >&2; exit 1; }

# 1. Packages (~17 s the first time).
pkgs=(podman buildah debootstrap runc uidmap slirp4netns fuse-overlayfs python3)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  say "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# 2. podman's settings for this sandbox, without touching /etc: the hard RLIMIT_NOFILE is 20000
# and podman would ask for 1048576 (setrlimit fails without CAP_SYS_RESOURCE), podman caps
# nproc at 32768 itself, and crun 1.8 refuses the mixed cgroup v1/v2 hierarchy, runc does not.
mkdir -p "$state"
cat >"$state/containers.conf" <<'EOF'
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]
[engine]
runtime = "runc"
EOF
export CONTAINERS_CONF=$state/containers.conf

# 3. The base image (~40 s once): a minbase bookworm from the host's own mirror and suites.
if ! podman image exists "$base"; then
  mirror=${INTAKE_DEBIAN_MIRROR:-}
  [ -n "$mirror" ] || mirror=$(awk '/^URIs:/ {print $2; exit}' \
                               /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
  [ -n "$mirror" ] || mirror=$(awk '$1 == "deb" {print $2; exit}' /etc/apt/sources.list \
                               2>/dev/null || true)
  [ -n "$mirror" ] || mirror=http://deb.debian.org/debian
  say "building $base with debootstrap from $mirror"
  rootfs=$(mktemp -d /var/tmp/intake-rootfs.XXXXXX)
  trap 'rm -rf "$rootfs"' EXIT
  debootstrap --variant=minbase bookworm "$rootfs" "$mirror" >"$state/debootstrap.log" 2>&1 \
    || { tail -20 "$state/debootstrap.log"; die "debootstrap failed"; }
  if [ -f /etc/apt/sources.list.d/debian.sources ]; then
    # The host's suites too (updates, security), so the image gets what the host gets.
    cp /etc/apt/sources.list.d/debian.sources "$rootfs/etc/apt/sources.list.d/"
    rm -f "$rootfs/etc/apt/sources.list"
  fi
  rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/archives/*.deb
  tar -C "$rootfs" -c . | podman import --quiet --change 'CMD ["bash"]' - "$base" >/dev/null
  rm -rf "$rootfs"
  trap - EXIT
fi
t_base=$SECONDS

# 4. The image (~65 s cold; the package layers are cached after that).
say "building $image"
old_id=$(podman image inspect --format '{{.Id}}' "$image" 2>/dev/null || true)
podman build --format docker --pull=never --build-arg DEBIAN_IMAGE=$base \
  -f "$root/docker/Dockerfile" -t "$image" "$root" >"$state/build.log" 2>&1 \
  || { tail -40 "$state/build.log"; die "podman build failed (log: $state/build.log)"; }
# The previous run's image, now untagged (only ours: others may build on this machine too).
new_id=$(podman image inspect --format '{{.Id}}' "$image")
[ -n "$old_id" ] && [ "$old_id" != "$new_id" ] && podman rmi "$old_id" >/dev/null 2>&1 || true
t_build=$SECONDS
size=$(podman image inspect --format '{{.Size}}' "$image")
say "built in $((t_build - t_base)) s, $((size / 1000000)) MB"

# 5. Run it: embedded Kafka, both listeners on all of the container's interfaces, published on
# the host's loopback only.
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
gw_port=$(free_port)
admin_port=$(free_port)
cat >"$state/intaked.yaml" <<'EOF'
# tests/container.sh: the image in embedded mode (nothing durable; no snapshot on the read-only
# root), sized small.
listen:
  address: 0.0.0.0
  port: 7400
admin:
  enabled: true
  address: 0.0.0.0
  port: 9400
dedup:
  memory: 4MiB
  sequence_memory: 1MiB
kafka:
  mode: embedded
EOF
chmod 644 "$state/intaked.yaml"
trap 'podman rm -f "$name" >/dev/null 2>&1 || true' EXIT
podman run -d --name "$name" -p "127.0.0.1:$gw_port:7400" -p "127.0.0.1:$admin_port:9400" \
  -v "$state/intaked.yaml:/etc/intake/intaked.yaml:ro" \
  --read-only --cap-drop ALL --security-opt no-new-privileges "$image" >/dev/null \
  2>"$state/run.err" || { cat "$state/run.err"; die "podman run failed"; }
# (run.err holds podman's complaint that there is no systemd to schedule the health check.)
logs_on_fail=1
t_start=$SECONDS

# Healthy: the image's own HEALTHCHECK (no systemd here to run it on its interval).
deadline=$((SECONDS + 60))
until podman healthcheck run "$name" >/dev/null 2>&1; do
  [ "$(podman inspect --format '{{.State.Running}}' "$name")" = true ] || die "intaked exited"
  [ $SECONDS -lt $deadline ] || die "not healthy within 60 s"
  sleep 0.5
done
say "healthy $((SECONDS - t_start)) s after start"

# An event in with the image's intake-send, and its retransmit.
now=$(date +%s%3N)
event='{"source_id":"ct-smoke-1","source_kind":"SOURCE_KIND_SENSOR","event_id":"ct-1",'
event+='"type":"smoke.alarm","severity":1,"time_ms":"'$now'","attributes":{"via":"container"}}'
out=$(printf '%s\n' "$event" | podman exec -i "$name" intake-send -g ct-gw --timeout 20s 2>&1) \
  || die "intake-send: $out"
grep -q '^<stdin>:1 accepted ct-smoke-1 ct-1$' <<<"$out" || die "intake-send said: $out"
out=$(printf '%s\n' "$event" | podman exec -i "$name" intake-send -g ct-gw --timeout 20s 2>&1) \
  || die "intake-send (retransmit): $out"
grep -q '^<stdin>:1 duplicate ct-smoke-1 ct-1$' <<<"$out" || die "retransmit: $out"
say "intake-send: accepted, then duplicate"

# Out again with the image's intake-tail, from the embedded cluster's bootstrap address.
bootstrap=$(podman logs "$name" 2>&1 | grep -o 'bootstrap=[0-9.:]*' | head -1 | cut -d= -f2)
[ -n "$bootstrap" ] || die "no bootstrap= in intaked's log"
out=$(podman exec "$name" intake-tail -b "$bootstrap" -t intake.events --from-beginning -n 1 \
        --timeout 20s 2>&1) || die "intake-tail: $out"
grep -q '"source_id":"ct-smoke-1".*"attributes":{"via":"container"}' <<<"$out" \
  || die "intake-tail printed: $out"
grep -q '"gateway_id":"ct-gw"' <<<"$out" || die "intake-tail printed: $out"
say "intake-tail: the event is in intake.events"

# /metrics on the published admin port, from the host.
metrics=$(timeout 10 bash -c 'exec 3<>/dev/tcp/127.0.0.1/'"$admin_port"'
  printf "GET /metrics HTTP/1.0\r\n\r\n" >&3; cat <&3') || die "GET /metrics failed"
grep -q '^HTTP/1.[01] 200' <<<"$metrics" || die "/metrics: $(head -1 <<<"$metrics")"
delivered=$(awk '$1 == "intake_events_delivered_total" {print $2}' <<<"$metrics")
duplicate=$(awk '$1 == "intake_events_duplicate_total" {print $2}' <<<"$metrics")
[ "$delivered" = 1 ] && [ "$duplicate" = 1 ] \
  || die "/metrics: delivered=$delivered duplicate=$duplicate (wanted 1 and 1)"
say "/metrics on 127.0.0.1:$admin_port: delivered 1, duplicate 1"

# The published gateway port, with the host's own intake-send when a build has one.
host_send=${INTAKE_SEND:-}
for b in "$root/build-test/intake-send" "$root/build/intake-send"; do
  [ -z "$host_send" ] && [ -x "$b" ] && host_send=$b
done
if [ -n "$host_send" ]; then
  out=$(printf '%s\n' "${event/ct-1/ct-2}" | "$host_send" -a "127.0.0.1:$gw_port" --timeout 20s \
          2>&1) || die "host intake-send: $out"
  grep -q 'accepted ct-smoke-1 ct-2' <<<"$out" || die "host intake-send said: $out"
  say "host intake-send through 127.0.0.1:$gw_port: accepted"
fi

# SIGTERM: drain and exit 0.
podman kill --signal TERM "$name" >/dev/null
code=$(timeout 60 podman wait "$name") || die "no exit within 60 s of SIGTERM"
[ "$code" = 0 ] || die "exit status $code after SIGTERM"
say "SIGTERM: exit 0; run checks took $((SECONDS - t_start)) s"
say "PASS (base image $((t_base - t0)) s, image build $((t_build - t_base)) s," \
    "run $((SECONDS - t_start)) s)"

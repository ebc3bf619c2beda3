#!/usr/bin/env bash
# `make image`: the OCI image, built on this machine with podman from a Debian root
# filesystem made here by mmdebstrap from Debian's packages — nothing is pulled from an
# image registry — around the nearfield binary built from this checkout. Prints
# NEARFIELD_IMAGE=name:tag last.
#   scripts/image.sh build            the image (the base is cached by its package list)
#   scripts/image.sh run-flags        the `podman run` flags this machine needs (see below)
#   scripts/image.sh test [IMAGE]     `--version`, then a stage against a local Kafka
#                                     (--network host) until /readyz answers
# The same layout as deploy/Dockerfile (non-root uid 10001, the example city in
# /etc/nearfield without its demo key); that file stays for registries' builders.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
log() { echo "image: $*" >&2; }
OUT=target/image
PACKAGES=ca-certificates,libssl3,libcurl4,zlib1g
SUITE=bookworm

need_tools() {
  local missing=()
  command -v podman >/dev/null || missing+=(podman)
  command -v mmdebstrap >/dev/null || missing+=(mmdebstrap)
  command -v runc >/dev/null || missing+=(runc)
  if ((${#missing[@]})); then
    if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
      log "installing ${missing[*]}"
      export DEBIAN_FRONTEND=noninteractive
      apt-get update -qq >/dev/null && apt-get install -y -qq "${missing[@]}" >/dev/null
    else
      log "missing: ${missing[*]} (Debian packages)"; exit 1
    fi
  fi
}

# The base: Debian minbase + the runtime libraries + the nearfield user, imported once per
# package list (a content-addressed tag).
base() {
  local key tag
  key=$(printf '%s %s uid10001' "$SUITE" "$PACKAGES" | sha256sum | cut -c1-12)
  tag="localhost/nearfield-base:$SUITE-$key"
  if ! podman image exists "$tag"; then
    mkdir -p "$OUT"
    log "making the base root filesystem ($SUITE: $PACKAGES) with mmdebstrap"
    mmdebstrap --quiet --variant=minbase --mode=root --format=tar --include="$PACKAGES" \
      --customize-hook='chroot "$1" groupadd --system --gid 10001 nearfield' \
      --customize-hook='chroot "$1" useradd --system --uid 10001 --gid 10001 --home-dir /nonexistent --shell /usr/sbin/nologin nearfield' \
      --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*' \
      "$SUITE" "$OUT/base.tar" http://deb.debian.org/debian >&2
    podman import --quiet "$OUT/base.tar" "$tag" >/dev/null
    rm -f "$OUT/base.tar"
  fi
  echo "$tag"
}

build() {
  need_tools
  cargo build --release --locked --bin nearfield >&2
  local from version rev tag ctx
  from=$(base)
  version=$(target/release/nearfield --version | awk '{print $2}')
  rev=$(git rev-parse --short=12 HEAD 2>/dev/null || echo local)
  git diff --quiet HEAD 2>/dev/null || rev="$rev-dirty"
  tag="localhost/nearfield:$version-$rev"
  ctx="$OUT/context"
  rm -rf "$ctx" && mkdir -p "$ctx"
  cp target/release/nearfield "$ctx/nearfield"
  strip "$ctx/nearfield" 2>/dev/null || true
  cp -r deploy/examples "$ctx/examples"
  # No key in the image: deployments set NEARFIELD_INGEST__MASTER_KEY or master_key_file.
  sed -i '/^master_key *=/d' "$ctx/examples/nearfield.toml"
  cat >"$ctx/Containerfile" <<EOF
FROM $from
COPY nearfield /usr/local/bin/nearfield
COPY examples/ /etc/nearfield/
USER 10001:10001
ENV NEARFIELD_CONFIG=/etc/nearfield/nearfield.toml NEARFIELD_LOG_JSON=true
# 8080 ingest (devices), 9080 ingest (operators: metrics), 8081 aggregator, 8082 emitter,
# 8090 live page.
EXPOSE 8080 9080 8081 8082 8090
LABEL org.opencontainers.image.title=nearfield org.opencontainers.image.revision=$rev
ENTRYPOINT ["/usr/local/bin/nearfield"]
CMD ["--help"]
EOF
  # COPY only: building needs no container runtime.
  podman build --quiet --pull=never -t "$tag" -t localhost/nearfield:latest -f "$ctx/Containerfile" "$ctx" >&2
  echo "NEARFIELD_IMAGE=$tag"
}

# `podman run` flags for this machine, found by running the image's `--version`: none
# where podman runs containers as it is; on a VM without CAP_SYS_RESOURCE and with hybrid
# cgroups (like this project's CI machines), runc and limits within the current hard ones.
# Sets FLAGS and VERSION (what `--version` printed).
probe() {
  local img=$1
  FLAGS=""
  if VERSION=$(podman run --rm --network host "$img" --version 2>/dev/null); then
    return 0
  fi
  FLAGS="--runtime runc --ulimit nofile=$(ulimit -Hn):$(ulimit -Hn) --ulimit nproc=4096:4096"
  # shellcheck disable=SC2086
  VERSION=$(podman run --rm --network host $FLAGS "$img" --version)
}

run_flags() {
  probe "$1"
  echo "$FLAGS"
}

test_image() {
  need_tools
  local img=${1:-localhost/nearfield:latest} flags port
  probe "$img"
  flags=$FLAGS
  [[ "$VERSION" == nearfield* ]] || { log "--version printed: $VERSION"; exit 1; }
  log "$img: $VERSION"
  export NEARFIELD_KAFKA_DIR="$ROOT/target/kafka-image-test" NEARFIELD_KAFKA_OWNER_PID=$$
  CNAME="nearfield-image-test-$$"
  trap 'podman rm -f "$CNAME" >/dev/null 2>&1 || true; scripts/kafka.sh down >/dev/null 2>&1 || true' EXIT
  scripts/kafka.sh down >/dev/null 2>&1 || true
  local line brokers
  line=$(scripts/kafka.sh up 1 | tail -n 1)
  brokers="${line#NEARFIELD_BROKERS=}"
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  # shellcheck disable=SC2086
  podman run --rm --network host $flags -e NEARFIELD_BROKERS="$brokers" "$img" topics >&2
  # shellcheck disable=SC2086
  podman run -d --name "$CNAME" --network host $flags -e NEARFIELD_BROKERS="$brokers" \
    "$img" aggregate --listen "127.0.0.1:$port" --instance-id image-test >/dev/null
  for _ in $(seq 1 120); do
    if curl -sf "http://127.0.0.1:$port/readyz" >/dev/null; then
      log "the aggregator in $img is ready on :$port (/readyz 200) against Kafka at $brokers"
      podman stop --time 30 "$CNAME" >/dev/null
      local code
      code=$(podman inspect --format '{{.State.ExitCode}}' "$CNAME")
      podman rm "$CNAME" >/dev/null
      [[ "$code" == 0 ]] || { log "the aggregator exited $code on SIGTERM"; exit 1; }
      log "it drained and exited 0 on SIGTERM"
      echo "image test: passed"
      return 0
    fi
    sleep 1
  done
  podman logs "$CNAME" 2>&1 | tail -n 30 >&2
  log "the aggregator in $img never became ready"
  exit 1
}

case "${1:-build}" in
  build) build ;;
  run-flags) run_flags "${2:-localhost/nearfield:latest}" ;;
  test) test_image "${2:-}" ;;
  *) sed -n '2,12p' "$0" >&2; exit 2 ;;
esac

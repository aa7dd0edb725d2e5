#!/usr/bin/env bash
# Builds the image with podman from a locally bootstrapped Debian base, runs it with a volume and a
# secrets directory, waits for its health check, generates an image through the container's /mcp
# with the SDK client (demo mode: the simulator runs inside the container), restarts the container
# and finds the row and the image still there, then removes everything it made.
#
# Needs root (rootful podman) and Debian's packages; it installs podman if missing. The base image
# is cached in $PIXAZO_PODMAN_DIR (default /var/cache/pixazo-mcp-podman) between runs.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PY="${PYTHON:-python3}"
DIR="${PIXAZO_PODMAN_DIR:-/var/cache/pixazo-mcp-podman}"
DEBIAN=localhost/debian-clean:bookworm  # debootstrap's minbase without its .debs, docs and locales
BASE=localhost/pixazo-python-build:bookworm-binutils  # with strip, for the wheels' debug symbols
RUNTIME=localhost/pixazo-python-runtime:bookworm
MAX_IMAGE_MB=300
IMAGE=localhost/pixazo-mcp:test
NAME="pixazo-ct-$$"
VOLUME="pixazo-ct-data-$$"
TOKEN="ct-$(head -c 18 /dev/urandom | od -An -tx1 | tr -d ' \n')"

log() { echo "container-test: $*"; }

if ! command -v podman >/dev/null || ! command -v debootstrap >/dev/null || ! command -v runc >/dev/null; then
  log "installing podman and debootstrap"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq podman runc fuse-overlayfs slirp4netns debootstrap uidmap >/dev/null
fi

mkdir -p "$DIR"
cat >"$DIR/storage.conf" <<CONF
[storage]
driver = "overlay"
runroot = "$DIR/run"
graphroot = "$DIR/storage"
CONF
cat >"$DIR/containers.conf" <<'CONF'
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
CONF
export CONTAINERS_STORAGE_CONF="$DIR/storage.conf" CONTAINERS_CONF="$DIR/containers.conf"

WORK="$(mktemp -d)"
cleanup() {
  podman rm -f "$NAME" >/dev/null 2>&1 || true
  podman volume rm -f "$VOLUME" >/dev/null 2>&1 || true
  podman rmi -f "$IMAGE" >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT

if ! podman image exists "$DEBIAN"; then
    log "bootstrapping a Debian bookworm root file system"
    rm -rf "$DIR/rootfs"
    debootstrap --variant=minbase bookworm "$DIR/rootfs" http://deb.debian.org/debian >"$DIR/debootstrap.log" 2>&1
    # debootstrap leaves its .debs (about 120 MB) and the docs and locales behind: no image needs them.
    rm -rf "$DIR/rootfs/var/cache/apt/archives/"*.deb "$DIR/rootfs/usr/share/doc" "$DIR/rootfs/usr/share/man" \
      "$DIR/rootfs/usr/share/locale" "$DIR/rootfs/usr/share/info"
    tar -C "$DIR/rootfs" -c . | podman import --change 'CMD ["/bin/bash"]' \
      --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' - "$DEBIAN" >/dev/null
    rm -rf "$DIR/rootfs"
fi

# A Python image on the clean Debian base: $1 its tag, $2 what it is for (the log), $3 its packages.
# A machine behind an intercepting HTTPS proxy trusts extra CAs; the images must too (decided here, at
# build time, never in the project's Dockerfile).
python_image() {
  podman image exists "$1" && return 0
  log "building the Python $2 image"
  mkdir -p "$WORK/$2/certs"
  cp /usr/local/share/ca-certificates/*.crt "$WORK/$2/certs/" 2>/dev/null || true
  cat >"$WORK/$2/Dockerfile" <<IMAGEFILE
FROM $DEBIAN
RUN apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $3 \\
    && apt-get clean && rm -rf /var/lib/apt/lists/* /usr/share/doc /usr/share/man
COPY certs/ /usr/local/share/ca-certificates/
RUN update-ca-certificates
ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt \\
    REQUESTS_CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt
IMAGEFILE
  podman build --format docker --network host -t "$1" "$WORK/$2" >"$DIR/$2-build.log" 2>&1 \
    || { tail -30 "$DIR/$2-build.log"; exit 1; }
}
python_image "$BASE" build "python3 python3-venv python3-pip ca-certificates curl binutils"
python_image "$RUNTIME" runtime "python3 ca-certificates"  # Python alone: no pip, no curl

log "building $IMAGE"
podman build --format docker --network host --build-arg BASE_IMAGE="$BASE" --build-arg RUNTIME_IMAGE="$RUNTIME" \
  -t "$IMAGE" "$ROOT" >"$WORK/build.log" 2>&1 || { tail -40 "$WORK/build.log"; exit 1; }
SIZE_MB=$(( $(podman image inspect --format '{{.Size}}' "$IMAGE") / 1000000 ))
log "image size: $SIZE_MB MB (at most $MAX_IMAGE_MB)"
if [ "$SIZE_MB" -gt "$MAX_IMAGE_MB" ]; then
  log "the image is over $MAX_IMAGE_MB MB"; exit 1
fi

PORT="$("$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
mkdir -p "$WORK/secrets"
# The tokens arrive as a secret file (PIXAZO_AUTH_TOKENS in the secrets directory), not the environment.
printf 'ci:%s' "$TOKEN" >"$WORK/secrets/PIXAZO_AUTH_TOKENS"
# A session secret generated as deploy/secrets/README.md says (openssl rand -hex 32, here from Python).
"$PY" -c 'import secrets; print(secrets.token_hex(32), end="")' >"$WORK/secrets/PIXAZO_SESSION_SECRET"
# The shipped Kubernetes secret's placeholder, which the container must refuse to start with.
mkdir -p "$WORK/placeholder"
cp "$WORK/secrets/PIXAZO_AUTH_TOKENS" "$WORK/placeholder/"
"$PY" - "$ROOT/deploy/k8s/secret.yaml" "$WORK/placeholder/PIXAZO_SESSION_SECRET" <<'PY'
import sys, pathlib, yaml
value = yaml.safe_load(pathlib.Path(sys.argv[1]).read_text())["stringData"]["PIXAZO_SESSION_SECRET"]
pathlib.Path(sys.argv[2]).write_text(value)
PY
chmod 0644 "$WORK/secrets/"* "$WORK/placeholder/"*
podman volume create "$VOLUME" >/dev/null

log "a placeholder session secret stops the container at once"
set +e
podman run --rm --read-only --tmpfs /tmp -v "$VOLUME:/data" -v "$WORK/placeholder:/run/secrets:ro" "$IMAGE" \
  serve --host 0.0.0.0 --demo >"$WORK/placeholder.log" 2>&1
rc=$?
set -e
if [ "$rc" != 2 ] || ! grep -q "PIXAZO_SESSION_SECRET looks like a placeholder" "$WORK/placeholder.log"; then
  log "the placeholder secret was not refused (exit $rc)"; cat "$WORK/placeholder.log"; exit 1
fi

start() {
  podman run -d --name "$NAME" --read-only --tmpfs /tmp -p "127.0.0.1:$PORT:8000" -v "$VOLUME:/data" \
    -v "$WORK/secrets:/run/secrets:ro" "$IMAGE" serve --host 0.0.0.0 --demo >/dev/null 2>>"$WORK/podman.log"
}
wait_healthy() {
  for _ in $(seq 1 150); do
    if podman healthcheck run "$NAME" >/dev/null 2>&1 && curl -fsS "http://127.0.0.1:$PORT/healthz" >/dev/null 2>&1; then
      return 0
    fi
    sleep 0.2
  done
  log "the container did not become healthy"; podman logs "$NAME" | tail -30; return 1
}

log "starting the container"
start
wait_healthy
[ "$(podman inspect --format '{{.Config.User}}' "$NAME")" = "10001:10001" ] || { log "not running as the non-root user"; exit 1; }
"$PY" "$ROOT/scripts/container_client.py" generate "http://127.0.0.1:$PORT" "$TOKEN" "$WORK/generated.json"

log "restarting the container"
podman restart -t 10 "$NAME" >/dev/null 2>>"$WORK/podman.log"
wait_healthy
"$PY" "$ROOT/scripts/container_client.py" verify "http://127.0.0.1:$PORT" "$TOKEN" "$WORK/generated.json"
podman stop -t 10 "$NAME" >/dev/null 2>>"$WORK/podman.log"
log "ok"

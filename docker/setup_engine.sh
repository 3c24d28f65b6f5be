#!/usr/bin/env bash
# Start a local Docker engine and build the images the Airflow DAG runs, offline-capable.
#
#   bash docker/setup_engine.sh            # engine + base image + wheelhouse + step image
#   bash docker/setup_engine.sh engine     # only install/start dockerd (and a compose CLI)
#   bash docker/setup_engine.sh base|wheelhouse|step-image   # one phase
#
# Every phase is idempotent and cached: a running engine is reused, the base image and the
# step image are rebuilt only when their inputs' hash (an image label) changed, and the
# wheelhouse is downloaded again only when pyproject.toml or constraints.txt change. Needs
# root for apt-get and dockerd (CI machines, a dev VM); on a workstation with Docker
# already running only the image phases do anything.
#
# Why these dockerd flags: the CI machines have no bridge/iptables support and no registry,
# so containers use host networking (they reach the tracking server on 127.0.0.1) and the
# base image is made with debootstrap instead of `docker pull`.
set -euo pipefail
cd "$(dirname "$0")/.."

BASE_IMAGE=${BASE_IMAGE:-mlproject-base:bookworm}
IMAGE=${IMAGE:-mlproject-step:latest}
WHEELHOUSE=${WHEELHOUSE:-wheelhouse}
DOCKERD_LOG=${DOCKERD_LOG:-/tmp/mlproject-dockerd.log}

phase() { echo "== setup_engine: $1 ($(date +%H:%M:%S))"; }

apt_install() {  # apt_install PACKAGE... : install the Debian packages that are missing
    local missing=()
    for pkg in "$@"; do
        dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    if [ "$(id -u)" -ne 0 ]; then
        echo "setup_engine: missing Debian packages ${missing[*]} and not root; install them first" >&2
        return 1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

engine() {
    phase "engine"
    # A compose CLI validates docker/compose.yaml in the tests: the plugin when Docker's own
    # packages are installed, else Debian's docker-compose.
    if ! docker compose version >/dev/null 2>&1 && ! command -v docker-compose >/dev/null 2>&1; then
        apt_install docker-compose || echo "setup_engine: no compose CLI; compose.yaml is checked by parsing only" >&2
    fi
    if docker info >/dev/null 2>&1; then
        echo "docker engine already running"
        return 0
    fi
    command -v dockerd >/dev/null 2>&1 || apt_install docker.io
    command -v docker >/dev/null 2>&1 || apt_install docker.io
    setsid dockerd --bridge=none --iptables=false --ip-masq=false >"$DOCKERD_LOG" 2>&1 < /dev/null &
    for _ in $(seq 1 60); do
        docker info >/dev/null 2>&1 && { echo "docker engine started (log: $DOCKERD_LOG)"; return 0; }
        sleep 1
    done
    echo "setup_engine: dockerd did not answer within 60 s; its log:" >&2
    tail -n 20 "$DOCKERD_LOG" >&2
    return 1
}

image_label() {  # image_label IMAGE LABEL : the label's value, empty when the image is missing
    docker image inspect --format "{{ index .Config.Labels \"$2\" }}" "$1" 2>/dev/null || true
}

base_image() {
    phase "base image $BASE_IMAGE"
    local packages="python3,python3-venv,python3-pip,ca-certificates"
    local key
    key=$(echo "bookworm minbase $packages" | sha256sum | cut -c1-16)
    if [ "$(image_label "$BASE_IMAGE" mlproject.inputs)" = "$key" ]; then
        echo "base image up to date"
        return 0
    fi
    apt_install debootstrap
    local rootfs
    rootfs=$(mktemp -d /tmp/mlproject-rootfs.XXXXXX)
    debootstrap --variant=minbase --include="$packages" bookworm "$rootfs" >/dev/null
    # pip inside the image reaches the index (when a build needs it) with the host's CA bundle.
    cp /etc/ssl/certs/ca-certificates.crt "$rootfs/etc/ssl/certs/ca-certificates.crt"
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
    tar -C "$rootfs" -c . | docker import \
        --change "LABEL mlproject.inputs=$key" --change 'CMD ["/bin/bash"]' - "$BASE_IMAGE" >/dev/null
    rm -rf "$rootfs"
    echo "built $BASE_IMAGE"
}

wheelhouse() {
    phase "wheelhouse $WHEELHOUSE"
    make --no-print-directory wheelhouse WHEELHOUSE="$WHEELHOUSE"
}

step_image() {
    phase "step image $IMAGE"
    make --no-print-directory image IMAGE="$IMAGE" BASE_IMAGE="$BASE_IMAGE" WHEELHOUSE="$WHEELHOUSE"
}

case "${1:-all}" in
    engine) engine ;;
    base) engine && base_image ;;
    wheelhouse) wheelhouse ;;
    step-image) engine && step_image ;;
    all) engine && base_image && wheelhouse && step_image ;;
    *) echo "usage: $0 [all|engine|base|wheelhouse|step-image]" >&2; exit 2 ;;
esac

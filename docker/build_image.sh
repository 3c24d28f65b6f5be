#!/usr/bin/env bash
# Build the step image (docker/Dockerfile) unless an image with the same inputs exists.
#
#   IMAGE=mlproject-step:latest BASE_IMAGE=mlproject-base:bookworm bash docker/build_image.sh
#
# The inputs' hash (Dockerfile, package source, configs, wheelhouse listing, base image id,
# build args) is stored as the image label `mlproject.inputs`; an unchanged hash skips the
# build, so CI and repeated `make image` calls cost a second.
set -euo pipefail
cd "$(dirname "$0")/.."

IMAGE=${IMAGE:-mlproject-step:latest}
BASE_IMAGE=${BASE_IMAGE:-mlproject-base:bookworm}
TORCH_INDEX_URL=${TORCH_INDEX_URL:-https://download.pytorch.org/whl/cpu}
EXTRAS=${EXTRAS:-}

base_id=$(docker image inspect --format '{{.Id}}' "$BASE_IMAGE" 2>/dev/null) || {
    echo "build_image: base image $BASE_IMAGE not found; run: bash docker/setup_engine.sh base" >&2
    exit 1
}
key=$( {
    echo "$base_id $TORCH_INDEX_URL $EXTRAS"
    find docker/Dockerfile docker/entrypoint.py docker/requirements.py .dockerignore pyproject.toml \
         constraints.txt MLproject conda.yaml README.md LICENSE src configs -type f \
         -not -path '*/__pycache__/*' -not -path '*.egg-info/*' -print0 | sort -z | xargs -0 sha256sum
    ls wheelhouse 2>/dev/null || true
} | sha256sum | cut -c1-16)

current=$(docker image inspect --format '{{ index .Config.Labels "mlproject.inputs" }}' "$IMAGE" 2>/dev/null || true)
if [ "$current" = "$key" ]; then
    echo "build_image: $IMAGE is up to date ($key)"
    exit 0
fi

# The legacy builder when the buildx plugin is missing (Debian's docker.io ships none).
docker buildx version >/dev/null 2>&1 || export DOCKER_BUILDKIT=0
build() {
    docker build --network host -q -f docker/Dockerfile \
        --build-arg BASE_IMAGE="$BASE_IMAGE" --build-arg TORCH_INDEX_URL="$TORCH_INDEX_URL" \
        --build-arg EXTRAS="$EXTRAS" "$@" . 2>&1 | grep -v -e 'DEPRECATED' -e 'BuildKit' -e 'environment-variable' -e '^ *$' || true
}
# The deps stage gets a tag of its own, so the prune below keeps it as the next build's cache.
build --target deps -t "${IMAGE%:*}-deps:latest"
build -t "$IMAGE" --label mlproject.inputs="$key"
docker image inspect "$IMAGE" --format '{{ index .Config.Labels "mlproject.inputs" }}' | grep -qx "$key" || {
    echo "build_image: docker build of $IMAGE failed" >&2
    exit 1
}
# Images these tags pointed to before are now dangling: drop them (layers the new images
# share stay), so repeated builds on a CI machine do not fill its disk.
docker image prune -f >/dev/null
echo "build_image: built $IMAGE ($key)"

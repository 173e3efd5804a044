#!/usr/bin/env bash
# Build the images the docker-runner tests use, pulling nothing: a Debian base made with debootstrap, then the CI
# worker image on top (docker/worker-ci.Dockerfile). Both are reused while they exist.
set -euo pipefail
base=${AR_BASE_IMAGE:-ar-debian-base:bookworm}
cd "$(dirname "$0")/.."
# Tagged by the Dockerfile's hash: a changed Dockerfile gets a new image, an unchanged one is reused.
image=${AR_CI_WORKER_IMAGE:-action-recognition-worker:ci-$(sha256sum docker/worker-ci.Dockerfile | cut -c1-12)}
if ! docker image inspect "$base" >/dev/null 2>&1; then
  mirror=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/*.sources 2>/dev/null || true)
  mirror=${mirror:-http://deb.debian.org/debian}
  root=$(mktemp -d)
  trap 'rm -rf "$root"' EXIT
  echo "debootstrap bookworm from $mirror" >&2
  debootstrap --variant=minbase bookworm "$root" "$mirror" >/dev/null
  tar -C "$root" -c . | docker import - "$base" >/dev/null
fi
if ! docker image inspect "$image" >/dev/null 2>&1; then
  docker build --quiet --network host --build-arg "BASE_IMAGE=$base" -f docker/worker-ci.Dockerfile -t "$image" docker/ >/dev/null
fi
echo "$image"

#!/usr/bin/env bash
# Build the enclave Docker image reproducibly and print its image ID (sha256:...).
#   usage: scripts/eif-docker-build.sh TAG
#   env: SOURCE_DATE_EPOCH (default 1767225600), AWS_REGION (default us-east-1),
#        EIF_ALLOW_DIRTY / EIF_IGNORE_DIRTY (see eif-stage.sh), DOCKER (default docker)
set -euo pipefail
tag=${1:?usage: $0 TAG}
docker=${DOCKER:-docker}
epoch=${SOURCE_DATE_EPOCH:-1767225600}
region=${AWS_REGION:-us-east-1}
here=$(cd "$(dirname "$0")" && pwd)

if ! command -v "$docker" >/dev/null 2>&1; then
    echo "eif: no '$docker' command: install Docker (docker engine + buildx) to build the enclave image" >&2
    exit 1
fi
if ! "$docker" info >/dev/null 2>&1; then
    echo "eif: no Docker engine reachable ('$docker info' failed): start dockerd or fix permissions" >&2
    exit 1
fi
if ! "$docker" buildx version >/dev/null 2>&1; then
    echo "eif: docker buildx is missing: it is needed for SOURCE_DATE_EPOCH and rewrite-timestamp" >&2
    exit 1
fi

context=$(mktemp -d)
trap 'rm -rf "$context"' EXIT
SOURCE_DATE_EPOCH=$epoch "$here/eif-stage.sh" "$context"

# No provenance/SBOM attestations (they embed build times and hosts); timestamps in
# layers clamped to SOURCE_DATE_EPOCH; no cache so each build really rebuilds.
SOURCE_DATE_EPOCH=$epoch "$docker" buildx build \
    --platform linux/amd64 \
    --build-arg "SOURCE_DATE_EPOCH=$epoch" \
    --build-arg "AWS_REGION=$region" \
    --provenance=false --sbom=false --no-cache \
    --output "type=docker,name=$tag,rewrite-timestamp=true" \
    --file "$context/eif/Dockerfile" \
    "$context" >&2
"$docker" image inspect --format '{{.Id}}' "$tag"

#!/usr/bin/env bash
# Build the enclave image (the same one `make eif-check` builds and checks: pinned
# Debian packages, hashed wheels, buildah; see eif/README.md), load it into Docker
# for `nitro-cli build-enclave --docker-uri TAG`, and print its Docker image ID.
#   usage: scripts/eif-docker-build.sh TAG
#   env: SOURCE_DATE_EPOCH (default 1767225600), AWS_REGION (default us-east-1),
#        EIF_ALLOW_DIRTY / EIF_IGNORE_DIRTY (see eif-stage.sh), DOCKER (default docker),
#        EIF_BUILDER_IMAGE (default debian:bookworm): where mmdebstrap and buildah run
#          when this host has neither (Amazon Linux); it only hosts the tools, nothing
#          of it enters the enclave image,
#        plus those of eif-base.sh (EIF_TORCH_INDEX defaults to PyTorch's CPU index
#        when no torch wheel is in EIF_TORCH_WHEELS).
set -euo pipefail
tag=${1:?usage: $0 TAG}
docker=${DOCKER:-docker}
epoch=${SOURCE_DATE_EPOCH:-1767225600}
region=${AWS_REGION:-us-east-1}
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)

if ! command -v "$docker" >/dev/null 2>&1; then
    echo "eif: no '$docker' command: install Docker (nitro-cli reads the image from its engine)" >&2
    exit 1
fi
if ! "$docker" info >/dev/null 2>&1; then
    echo "eif: no Docker engine reachable ('$docker info' failed): start dockerd or fix permissions" >&2
    exit 1
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/eif-docker.XXXXXX")
trap 'rm -rf "$work"' EXIT
SOURCE_DATE_EPOCH=$epoch "$here/eif-stage.sh" "$work/src"
mkdir -p "$work/out"
torch_index=${EIF_TORCH_INDEX:-}
if [ -z "$torch_index" ] && ! ls "${EIF_TORCH_WHEELS:-/opt/wheels}"/torch-*.whl >/dev/null 2>&1; then
    torch_index=https://download.pytorch.org/whl/cpu
fi

if [ "$(id -u)" = 0 ] && command -v mmdebstrap >/dev/null 2>&1 && command -v buildah >/dev/null 2>&1; then
    EIF_TORCH_INDEX=$torch_index SOURCE_DATE_EPOCH=$epoch AWS_REGION=$region \
        EIF_WHEEL_CACHE=${EIF_WHEEL_CACHE:-$root/.hermetic/eif-wheels} PYTHON=${PYTHON:-$root/.venv/bin/python} \
        EIF_DOCKER_ARCHIVE=$work/out/image.docker.tar "$work/src/scripts/eif-image.sh" "$work/out" >/dev/null
else
    # No Debian tool chain here: run the same staged scripts in a Debian container.
    builder=${EIF_BUILDER_IMAGE:-debian:bookworm}
    echo "eif: building the image in $builder (privileged: mmdebstrap and buildah need root)" >&2
    "$docker" run --rm --privileged --network host \
        -v "$work/src:/src:ro" -v "$work/out:/out" \
        -e SOURCE_DATE_EPOCH="$epoch" -e AWS_REGION="$region" -e EIF_TORCH_INDEX="$torch_index" \
        -e EIF_WHEEL_CACHE=/out/wheels -e PYTHON=python3 -e EIF_DOCKER_ARCHIVE=/out/image.docker.tar \
        "$builder" sh -euc 'apt-get update -qq
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mmdebstrap buildah python3-pip >/dev/null
            /src/scripts/eif-image.sh /out >/dev/null' >&2
fi
echo "eif: OCI image digest $(cat "$work/out/digest") (make eif-check on any Linux machine gives the same)" >&2
"$docker" load --quiet --input "$work/out/image.docker.tar" >&2
"$docker" tag hermetic-enclave:build "$tag" >&2
"$docker" image inspect --format '{{.Id}}' "$tag"

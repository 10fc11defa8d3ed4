#!/usr/bin/env bash
# The enclave image as an OCI image, built with buildah (vfs storage, private to this
# run) from the tree this script lives in (run it from a staging made by eif-stage.sh):
# one layer holding the base root filesystem (scripts/eif-base.sh: pinned Debian
# packages + hashed wheels) and enclave/ + eif/entrypoint.py under /opt/hermetic, and
# its configuration (user, workdir, env, entrypoint). Every
# time stamp is SOURCE_DATE_EPOCH and layers are uncompressed, so the same tree gives
# the same image digest. Prints that digest (sha256:...) on stdout.
#
#   usage: STAGE/scripts/eif-image.sh OUT
#     OUT/oci          the image, an OCI image layout (tag hermetic-enclave)
#     OUT/base.tar     the base root filesystem it was built on
#     OUT/digest       the image digest (sha256 of the manifest)
#   env: SOURCE_DATE_EPOCH (default 1767225600), AWS_REGION (default us-east-1),
#        EIF_BASE_TAR (use this base instead of building one),
#        EIF_DOCKER_ARCHIVE (also write the image there as a docker-archive, for docker load),
#        and those of eif-base.sh.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
src=$(cd "$here/.." && pwd)
out=${1:?usage: $0 OUT}
epoch=${SOURCE_DATE_EPOCH:-1767225600}
region=${AWS_REGION:-us-east-1}
tag=hermetic-enclave:build

die() { echo "eif-image: $*" >&2; exit 1; }
command -v buildah >/dev/null 2>&1 || die "buildah is missing (apt-get install buildah)"
[ "$(id -u)" = 0 ] || die "needs root (rootful buildah with the vfs driver)"
[ -f "$src/eif/entrypoint.py" ] && [ -d "$src/enclave" ] || die "$src is not a staged tree (scripts/eif-stage.sh)"
case "$region" in *[!a-z0-9-]*|"") die "invalid AWS_REGION '$region'";; esac

mkdir -p "$out"
out=$(cd "$out" && pwd)
rm -rf "$out/oci" "$out/digest"
store=$(mktemp -d "${TMPDIR:-/tmp}/eif-image.XXXXXX")
b() { buildah --root "$store/root" --runroot "$store/run" --storage-driver vfs "$@"; }
cleanup() { b rm --all >/dev/null 2>&1 || true; rm -rf "$store"; }
trap cleanup EXIT

if [ -n "${EIF_BASE_TAR:-}" ]; then
    [ -f "$EIF_BASE_TAR" ] || die "EIF_BASE_TAR=$EIF_BASE_TAR is not a file"
    [ "$EIF_BASE_TAR" -ef "$out/base.tar" ] || ln -f "$EIF_BASE_TAR" "$out/base.tar" 2>/dev/null \
        || cp "$EIF_BASE_TAR" "$out/base.tar"
else
    SOURCE_DATE_EPOCH=$epoch "$here/eif-base.sh" "$out/base.tar"
fi

# One layer, like a squashed Docker build: the base root filesystem (buildah add
# unpacks the tar as it is), then only the enclave package and the entrypoint,
# root-owned, with the modes eif-stage.sh gave them (0644 files, 0755 directories).
ctr=$(b from --quiet scratch)
b add --quiet "$ctr" "$out/base.tar" / >/dev/null
b copy --quiet --chown 0:0 "$ctr" "$src/enclave" /opt/hermetic/enclave >/dev/null
b copy --quiet --chown 0:0 "$ctr" "$src/eif/entrypoint.py" /opt/hermetic/entrypoint.py >/dev/null
# What nitro-cli keeps of this: the entrypoint (its cmd file) and the environment (its
# env file). USER applies to `podman/docker run` only; the entrypoint drops root itself.
b config \
    --os linux --arch amd64 \
    --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    --env LANG=C.UTF-8 \
    --env SOURCE_DATE_EPOCH="$epoch" \
    --env PYTHONDONTWRITEBYTECODE=1 \
    --env PYTHONHASHSEED=0 \
    --env PYTHONUNBUFFERED=1 \
    --env PYTHONPATH=/opt/hermetic \
    --env HERMETIC_REGION="$region" \
    --user 10001:10001 \
    --workingdir /opt/hermetic \
    --entrypoint '["/usr/local/bin/python3", "/opt/hermetic/entrypoint.py"]' \
    --cmd '' \
    --created-by "scripts/eif-image.sh: eif-base.sh root filesystem + enclave/ + eif/entrypoint.py" \
    "$ctr"
# Straight into an OCI layout (no copy through local storage): every time stamp, in the
# config and on every file of the layer, is SOURCE_DATE_EPOCH; no builder label.
b commit --quiet --timestamp "$epoch" --identity-label=false "$ctr" "oci:$out/oci:hermetic-enclave" >/dev/null
if [ -n "${EIF_DOCKER_ARCHIVE:-}" ]; then
    # The same container committed again in Docker's format, for `docker load`: other
    # digests, the same file system, command and environment (what nitro-cli reads).
    rm -f "$EIF_DOCKER_ARCHIVE"
    b commit --quiet --timestamp "$epoch" --identity-label=false --format docker "$ctr" \
        "docker-archive:$EIF_DOCKER_ARCHIVE:$tag" >/dev/null
fi
b rm "$ctr" >/dev/null

digest=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["manifests"][0]["digest"])' "$out/oci/index.json")
echo "$digest" > "$out/digest"
echo "eif-image: $out/oci = $digest (base sha256:$(sha256sum "$out/base.tar" | cut -d' ' -f1))" >&2
echo "$digest"

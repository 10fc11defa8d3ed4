#!/usr/bin/env bash
# Before the (long) image build: can this host build the EIF, reproducibly? Every failed
# check prints what to run; all are reported at once, then exit 1. Warnings do not fail.
#   env: DOCKER (docker), EIF_BUILDER_IMAGE (debian:bookworm: where the image is built
#        when this host lacks root, mmdebstrap or buildah), EIF_SKIP_PREFLIGHT=1 (skip
#        every check: for a host you have checked by hand)
#
# What the build needs (scripts/eif-docker-build.sh, eif/README.md):
#  * a Docker engine: nitro-cli reads the image from it (`docker load`), and on a host
#    without root, mmdebstrap and buildah the image is built in a privileged Debian
#    container (a warning says so).
#  * nitro-cli, and a pair of nitro-cli and Docker Engine that works: nitro-cli before
#    1.3.0 cannot use Docker 25 or later ("[ E50 ] Docker image pull error",
#    aws-nitro-enclaves-cli#537, fixed in 1.3.0 by #595); with Docker 26 and later there
#    are open reports of build-enclave failing because its linuxkit does not find the local
#    image ("[ E48 ]", #629 and #746). Amazon Linux 2023's docker package (25) is the tested
#    engine: Docker 26+ is a warning.
set -euo pipefail
docker=${DOCKER:-docker}
builder_image=${EIF_BUILDER_IMAGE:-debian:bookworm}
min_nitro_cli=1.3.0   # for Docker 25 and later

if [ -n "${EIF_SKIP_PREFLIGHT:-}" ]; then
    echo "eif-preflight: EIF_SKIP_PREFLIGHT set: Docker and nitro-cli versions not checked" >&2
    exit 0
fi

errors=()
warn() { echo "eif-preflight: warning: $*" >&2; }
fail() { errors+=("$*"); }
# "v0.12.1-desktop.4" -> "0.12.1"; nothing when there is no number.
number() { sed -nE 's/^[^0-9]*([0-9]+\.[0-9]+(\.[0-9]+)?).*/\1/p' <<<"$1"; }
# at_least VERSION MINIMUM
at_least() { [ "$(printf '%s\n%s\n' "$2" "$1" | sort -V | head -n1)" = "$2" ]; }

engine=""
if ! command -v "$docker" >/dev/null 2>&1; then
    fail "no '$docker' command: install Docker (Amazon Linux 2023, as root: dnf install -y docker && systemctl enable --now docker)"
elif ! "$docker" info >/dev/null 2>&1; then
    fail "no Docker engine answers ('$docker info' fails): start it (as root: systemctl enable --now docker) or join the docker group (as root: usermod -aG docker $(id -un), then log in again)"
else
    engine=$(number "$("$docker" version --format '{{.Server.Version}}' 2>/dev/null || true)")
fi
if [ "$(id -u)" = 0 ] && command -v mmdebstrap >/dev/null 2>&1 && command -v buildah >/dev/null 2>&1; then
    tools="mmdebstrap and buildah here"
else
    tools="a privileged $builder_image container"
    warn "no mmdebstrap and buildah as root here: the image will be built in $tools (the same scripts and pins; the Docker engine must be allowed to run privileged containers)"
fi

if ! command -v nitro-cli >/dev/null 2>&1; then
    fail "no nitro-cli: install it (Amazon Linux 2023, as root: dnf install -y aws-nitro-enclaves-cli aws-nitro-enclaves-cli-devel)"
else
    nitro=$(number "$(nitro-cli --version 2>/dev/null || true)")
    if [ -n "$engine" ] && at_least "$engine" 25; then
        if [ -z "$nitro" ]; then
            warn "cannot read the nitro-cli version ('nitro-cli --version'); Docker $engine needs nitro-cli $min_nitro_cli or later"
        elif ! at_least "$nitro" "$min_nitro_cli"; then
            fail "nitro-cli $nitro cannot use Docker Engine $engine (25 or later: build-enclave fails with '[ E50 ] Docker image pull error'; fixed in nitro-cli $min_nitro_cli): upgrade it (as root: dnf upgrade -y aws-nitro-enclaves-cli aws-nitro-enclaves-cli-devel)"
        fi
    fi
    if [ -n "$engine" ] && at_least "$engine" 26; then
        warn "Docker Engine $engine: nitro-cli build-enclave has open reports of failing with Docker 26 and later ('[ E48 ]': its linuxkit does not find the local image and tries Docker Hub; aws-nitro-enclaves-cli#629, #746); if it does, build on Amazon Linux 2023 with its own docker package (25)"
    fi
fi

if [ ${#errors[@]} -gt 0 ]; then
    echo "eif: cannot build the EIF here: missing or too old (${#errors[@]}):" >&2
    for e in "${errors[@]}"; do
        echo "eif:   - $e" >&2
    done
    echo "eif: see eif/README.md (Build host); EIF_SKIP_PREFLIGHT=1 skips these checks" >&2
    exit 1
fi
echo "eif-preflight: Docker ${engine:-?}, nitro-cli ${nitro:-?}, image built with $tools: OK" >&2

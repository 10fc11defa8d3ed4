#!/usr/bin/env bash
# Before the (long) image build: can this host build the EIF, reproducibly? Every failed
# check prints what to run; all are reported at once, then exit 1. Warnings do not fail.
#   env: DOCKER (docker), BUILDX_BUILDER (the buildx builder, as buildx itself reads it),
#        EIF_BUILDKIT_IMAGE (the BuildKit image the advice names), EIF_SKIP_PREFLIGHT=1
#        (skip every check: for a host you have checked by hand)
#
# What the build needs (eif/Dockerfile, scripts/eif-docker-build.sh, eif/README.md):
#  * `docker buildx` 0.10 or later: `--provenance=false --sbom=false`, and SOURCE_DATE_EPOCH
#    passed on as a build argument. Amazon Linux 2023's docker package carries buildx 0.12
#    built without a version ("v0.0.0+unknown"): accepted as that.
#  * a builder running BuildKit 0.13 or later, for `rewrite-timestamp=true` (file times in
#    the layers clamped to SOURCE_DATE_EPOCH), and not the engine's built-in builder (the
#    "docker" driver): with it, `--output type=docker,rewrite-timestamp=true` is refused on
#    the containerd image store ("conflicts with unpack") and reported not to clamp on the
#    classic one. A docker-container builder exports a tarball that buildx loads into the
#    engine, so the engine's own version does not matter for the image.
#  * nitro-cli, and a pair of nitro-cli and Docker Engine that works: nitro-cli before
#    1.3.0 cannot use Docker 25 or later ("[ E50 ] Docker image pull error",
#    aws-nitro-enclaves-cli#537, fixed in 1.3.0 by #595); with Docker 26 and later there
#    are open reports of build-enclave failing because its linuxkit does not find the local
#    image ("[ E48 ]", #629 and #746). Amazon Linux 2023's docker package (25) is the tested
#    engine: Docker 26+ is a warning.
set -euo pipefail
docker=${DOCKER:-docker}
buildkit_image=${EIF_BUILDKIT_IMAGE:-moby/buildkit:v0.23.2}
min_buildx=0.10.0
min_buildkit=0.13.0
min_nitro_cli=1.3.0   # for Docker 25 and later

if [ -n "${EIF_SKIP_PREFLIGHT:-}" ]; then
    echo "eif-preflight: EIF_SKIP_PREFLIGHT set: Docker, buildx and nitro-cli versions not checked" >&2
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
    fail "no '$docker' command: install Docker with buildx (Amazon Linux 2023, as root: dnf install -y docker && systemctl enable --now docker)"
elif ! "$docker" info >/dev/null 2>&1; then
    fail "no Docker engine answers ('$docker info' fails): start it (as root: systemctl enable --now docker) or join the docker group (as root: usermod -aG docker $(id -un), then log in again)"
else
    engine=$(number "$("$docker" version --format '{{.Server.Version}}' 2>/dev/null || true)")
    buildx_out=$("$docker" buildx version 2>/dev/null || true)
    if [ -z "$buildx_out" ]; then
        fail "'$docker buildx' is missing: install the buildx plugin $min_buildx or later (Amazon Linux 2023: it is part of the docker package; elsewhere the docker-buildx-plugin package, or a release binary from github.com/docker/buildx/releases as ~/.docker/cli-plugins/docker-buildx)"
    else
        buildx=$(number "$(awk '{print $2}' <<<"$buildx_out")")
        if [ -z "$buildx" ] || [ "$buildx" = 0.0.0 ]; then
            warn "docker buildx reports no version ('$buildx_out', as Amazon Linux 2023 packages it): assuming $min_buildx or later"
        elif ! at_least "$buildx" "$min_buildx"; then
            fail "docker buildx $buildx is older than $min_buildx (--provenance, --sbom, SOURCE_DATE_EPOCH): install a newer buildx plugin (a release binary from github.com/docker/buildx/releases as ~/.docker/cli-plugins/docker-buildx)"
        fi
        inspect=$("$docker" buildx inspect --bootstrap 2>/dev/null || true)
        name=$(awk -F':[ \t]*' '$1 == "Name" {print $2; exit}' <<<"$inspect")
        driver=$(awk -F':[ \t]*' '$1 == "Driver" {print $2; exit}' <<<"$inspect")
        buildkit=$(number "$(awk -F':[ \t]*' '$1 == "BuildKit version" || $1 == "Buildkit" {print $2; exit}' <<<"$inspect")")
        create="docker buildx create --name hermetic-eif --driver docker-container --driver-opt image=$buildkit_image --bootstrap"
        use="then build with 'make eif BUILDX_BUILDER=hermetic-eif' (or 'docker buildx use hermetic-eif')"
        if [ -z "$driver" ]; then
            fail "cannot inspect the buildx builder ('$docker buildx inspect --bootstrap' fails): create one: $create; $use"
        elif [ "$driver" = docker ]; then
            fail "buildx builder '${name:-default}' is the engine's built-in one (driver docker${buildkit:+, BuildKit $buildkit}), which does not give rewrite-timestamp=true with --output type=docker: create a docker-container builder: $create; $use"
        elif [ -z "$buildkit" ]; then
            fail "buildx builder '${name:-?}' (driver $driver) reports no BuildKit version: recreate it: docker buildx rm ${name:-NAME}; $create; $use"
        elif ! at_least "$buildkit" "$min_buildkit"; then
            fail "buildx builder '${name:-?}' runs BuildKit $buildkit; rewrite-timestamp needs $min_buildkit or later: docker buildx rm ${name:-NAME}; $create; $use"
        fi
    fi
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
echo "eif-preflight: Docker ${engine:-?}, buildx ${buildx:-?}, builder ${name:-?} (${driver:-?}, BuildKit ${buildkit:-?}), nitro-cli ${nitro:-?}: OK" >&2

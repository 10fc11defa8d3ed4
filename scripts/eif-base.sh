#!/usr/bin/env bash
# The enclave image's base root filesystem as a deterministic tar: Debian bookworm
# packages pinned by version (eif/debian-packages.lock) installed by mmdebstrap, then
# the hash-pinned wheels of eif/requirements-enclave.txt. Same inputs, same SHA-256.
#
#   usage: scripts/eif-base.sh OUT.tar        build the base (root, mmdebstrap, GNU tar)
#          scripts/eif-base.sh --update-lock  resolve the package set anew from the
#                                             archive and rewrite eif/debian-packages.lock
#   env: SOURCE_DATE_EPOCH (default 1767225600)
#        EIF_DEBIAN_MIRROR (default http://deb.debian.org/debian)
#        EIF_DEBIAN_SECURITY_MIRROR (default http://deb.debian.org/debian-security)
#          e.g. http://snapshot.debian.org/archive/debian/20260101T000000Z once the
#          pinned versions have left the live archive (see eif/README.md)
#        EIF_TORCH_WHEELS (default /opt/wheels): a folder holding the pinned torch wheel
#        EIF_TORCH_INDEX: an extra index for it instead (https://download.pytorch.org/whl/cpu)
#        EIF_WHEEL_CACHE (default .hermetic/eif-wheels): verified wheels, kept between builds
#        PYTHON (default .venv/bin/python, else python3): CPython 3.11 + pip, to download wheels
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
epoch=${SOURCE_DATE_EPOCH:-1767225600}
mirror=${EIF_DEBIAN_MIRROR:-http://deb.debian.org/debian}
security=${EIF_DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}
lock=$root/eif/debian-packages.lock
suite=bookworm
# What the image asks for; everything else in the lock is what these pull in, on top
# of the essential variant (Debian's smallest system that dpkg can manage): CPython
# 3.11, and the C++ runtime the torch, pyarrow and numpy wheels link against (the
# only shared library they need that the wheels do not bundle). The merged-usr hooks
# lay out /usr as debootstrap does and install usr-is-merged instead of usrmerge
# (which would bring perl).
roots=(python3.11 libstdc++6)

die() { echo "eif-base: $*" >&2; exit 1; }

mmdebstrap_args() {  # common arguments; $1 = output directory
    printf '%s\n' --mode=root --variant=essential --format=directory \
        --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr \
        "--include=$(IFS=,; echo "${roots[*]}")" \
        --aptopt='Acquire::Check-Valid-Until "false"' \
        --aptopt='APT::Install-Recommends "false"' \
        --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright' \
        --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/info/*' \
        --dpkgopt='path-exclude=/usr/share/locale/*' \
        "$suite" "$1" \
        "deb $mirror $suite main" "deb $mirror $suite-updates main" "deb $security $suite-security main"
}

installed_packages() {  # name=version of every package in the root $1, sorted
    chroot "$1" dpkg-query -W -f '${db:Status-Abbrev} ${Package}=${Version}\n' \
        | awk '$1 == "ii" { print $2 }' | LC_ALL=C sort
}

# --- hook mode: mmdebstrap runs this inside its customize stage (root = $2) ------------
if [ "${1:-}" = "--customize" ]; then
    r=${2:?}
    w=/tmp/hermetic-wheels
    mkdir -p "$r$w"
    cp "$EIF_WHEEL_DIR"/*.whl "$root/eif/requirements-enclave.txt" "$r$w/"
    pip_whl=$(cd "$r$w" && ls pip-*.whl)
    # The image's own interpreter runs pip from its wheel: hashes checked, no index, no
    # dependencies of its own, no bytecode. Debian marks its python externally managed;
    # the wheels go to /usr/local/lib/python3.11/dist-packages, which it searches.
    in_root() {
        chroot "$r" /usr/bin/env -i PATH=/usr/local/bin:/usr/bin:/bin HOME=/root LANG=C.UTF-8 \
            PYTHONDONTWRITEBYTECODE=1 SOURCE_DATE_EPOCH="$epoch" "$@"
    }
    in_root /bin/sh -c "umask 022 && exec /usr/bin/python3.11 $w/$pip_whl/pip install --no-index \
        --find-links $w --require-hashes --no-deps --only-binary=:all: --no-compile \
        --no-cache-dir --disable-pip-version-check --root-user-action=ignore \
        --break-system-packages -r $w/requirements-enclave.txt" >&2
    in_root /usr/bin/python3.11 "$w/$pip_whl/pip" check --disable-pip-version-check >&2
    rm -rf "${r:?}$w"
    # Same paths as before: the entrypoint is /usr/local/bin/python3.
    ln -sfn /usr/bin/python3.11 "$r/usr/local/bin/python3"
    # The enclave user, written directly (useradd would stamp /etc/shadow with today).
    echo 'enclave:x:10001:10001:hermetic enclave:/nonexistent:/usr/sbin/nologin' >> "$r/etc/passwd"
    echo 'enclave:x:10001:' >> "$r/etc/group"
    exit 0
fi

command -v mmdebstrap >/dev/null 2>&1 || die "mmdebstrap is missing (apt-get install mmdebstrap)"
[ "$(id -u)" = 0 ] || die "needs root (mmdebstrap --mode=root, chroot)"

work=$(mktemp -d "${TMPDIR:-/tmp}/eif-base.XXXXXX")
trap 'rm -rf "$work"' EXIT
rootfs=$work/rootfs

# --- lock mode: resolve the current archive and write the lock ------------------------
if [ "${1:-}" = "--update-lock" ]; then
    mapfile -t args < <(mmdebstrap_args "$rootfs")
    SOURCE_DATE_EPOCH=$epoch mmdebstrap --quiet "${args[@]}" >&2
    {
        echo "# Every Debian package of the enclave image's base, name=version (amd64), from"
        echo "# $suite, $suite-updates and $suite-security. scripts/eif-base.sh pins each one"
        echo "# (apt preferences) and fails if the installed set differs in any way."
        echo "# Roots: ${roots[*]} (plus Debian's Essential:yes set)."
        echo "# Regenerate with: scripts/eif-base.sh --update-lock   (changes every PCR)"
        installed_packages "$rootfs"
    } > "$lock.new"
    mv "$lock.new" "$lock"
    echo "eif-base: wrote $lock ($(grep -vc '^#' "$lock") packages)" >&2
    exit 0
fi

out=${1:?usage: $0 OUT.tar | --update-lock}
[ -f "$lock" ] || die "$lock is missing: run $0 --update-lock"
grep -v '^#' "$lock" | LC_ALL=C sort > "$work/want"

# Hash-checked wheels, downloaded once into a cache and checked again on every build.
python=${PYTHON:-}
if [ -z "$python" ]; then
    if [ -x "$root/.venv/bin/python" ]; then python=$root/.venv/bin/python; else python=python3; fi
fi
cache=${EIF_WHEEL_CACHE:-$root/.hermetic/eif-wheels}
mkdir -p "$cache"
sources=(--index-url https://pypi.org/simple --find-links "${EIF_TORCH_WHEELS:-/opt/wheels}")
[ -z "${EIF_TORCH_INDEX:-}" ] || sources+=(--extra-index-url "$EIF_TORCH_INDEX")
"$python" -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
    --require-hashes "${sources[@]}" -d "$cache" \
    -r "$root/eif/requirements-enclave.txt" -r "$root/eif/requirements-pip.txt" >&2 \
    || die "could not fetch the pinned wheels (PyPI; torch from ${EIF_TORCH_INDEX:-${EIF_TORCH_WHEELS:-/opt/wheels}})"
# Only the files the pins name go in, even if the cache holds others.
mkdir "$work/wheels"
"$python" - "$cache" "$work/wheels" "$root/eif/requirements-enclave.txt" "$root/eif/requirements-pip.txt" <<'PY'
import hashlib, os, shutil, sys
cache, dest, *reqs = sys.argv[1:]
wanted = {line.split("--hash=sha256:")[1].split()[0] for req in reqs for line in open(req)
          if "--hash=sha256:" in line and not line.lstrip().startswith("#")}
found = set()
for name in sorted(os.listdir(cache)):
    path = os.path.join(cache, name)
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    if h.hexdigest() in wanted:
        found.add(h.hexdigest())
        shutil.copyfile(path, os.path.join(dest, name))
if found != wanted:
    sys.exit(f"eif-base: {len(wanted - found)} pinned wheels are not in {cache}")
PY

# Every package pinned to its locked version (a version the archive no longer has is
# ignored by apt, and the set check below then fails naming it).
mkdir "$work/prefs"
while IFS== read -r name version; do
    printf 'Package: %s\nPin: version %s\nPin-Priority: 1001\n\n' "$name" "$version"
done < "$work/want" > "$work/prefs/hermetic-pins"

mapfile -t args < <(mmdebstrap_args "$rootfs")
export EIF_WHEEL_DIR=$work/wheels SOURCE_DATE_EPOCH=$epoch
mmdebstrap --quiet \
    --setup-hook="mkdir -p \"\$1/etc/apt/preferences.d\" && cp '$work/prefs/hermetic-pins' \"\$1/etc/apt/preferences.d/\"" \
    --customize-hook="'$here/eif-base.sh' --customize \"\$1\"" \
    "${args[@]}" >&2

installed_packages "$rootfs" > "$work/have"
if ! diff -u "$work/want" "$work/have" > "$work/diff"; then
    sed -n '3,$p' "$work/diff" | grep '^[-+]' >&2 || true
    die "installed packages differ from eif/debian-packages.lock (- locked, + installed): the archive no longer has a pinned version, or dependencies changed; use a snapshot mirror (EIF_DEBIAN_MIRROR) or refresh the lock with $0 --update-lock"
fi

# Nothing that records this machine or this build: apt's configuration and state (apt
# itself is not in the image), logs, caches, the host's resolv.conf/hostname, dpkg's
# backup files, device nodes (the enclave's init mounts /dev).
rm -rf "$rootfs"/etc/apt "$rootfs"/var/lib/apt "$rootfs"/var/cache/apt "$rootfs"/var/cache/ldconfig/aux-cache \
    "$rootfs"/var/cache/debconf/*-old "$rootfs"/var/lib/dpkg/*-old "$rootfs"/etc/resolv.conf "$rootfs"/etc/hostname \
    "$rootfs"/etc/machine-id "$rootfs"/var/log/* "$rootfs"/tmp/* "$rootfs"/dev/* "$rootfs"/run/* \
    "$rootfs"/root/.cache
find "$rootfs" -xdev -depth -name __pycache__ -path '*/dist-packages/*' -exec rm -rf {} +

# One deterministic tar: names sorted, owners numeric, every mtime clamped to
# SOURCE_DATE_EPOCH, no atime/ctime, no xattrs or ACLs.
tar --sort=name --format=pax --pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime \
    --numeric-owner --mtime="@$epoch" --clamp-mtime --no-xattrs --no-acls --no-selinux \
    -C "$rootfs" -cf "$work/base.tar" .
mv -f "$work/base.tar" "$out"
echo "eif-base: $out sha256:$(sha256sum "$out" | cut -d' ' -f1)" >&2

#!/usr/bin/env bash
# make eif-check: the enclave image is reproducible and measurable on this machine.
#
#   1. stage the committed tree twice (eif-stage.sh) and build the OCI image from each
#      staging (eif-image.sh: mmdebstrap + pinned packages + hashed wheels, buildah);
#      the two image digests must be equal;
#   2. the image runs: its command, with its environment, as its user, in a chroot of
#      its file system, reaches the enclave runtime (which stops at the missing
#      /dev/nsm), and every module of enclave/ and its wheels imports;
#   3. each image becomes a stand-in EIF (python -m parent.eif.standin: the image's
#      application ramdisk, stand-in kernel/init) measured by `hermetic measure-eif`:
#      both give the same PCR0/1/2;
#   4. one byte more in enclave/ gives another image whose EIF has another PCR0 and
#      PCR2 and the same PCR1.
# Installs mmdebstrap, buildah (and cpio) with apt-get when they are missing (root only).
#   env: EIF_CHECK_DIR (default .hermetic/eif-check; emptied first), EIF_CHECK_KEEP=1
#        keeps the images and EIFs there (default: only report.json stays),
#        PYTHON / HERMETIC (default .venv/bin/...), plus those of eif-base.sh.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
epoch=${SOURCE_DATE_EPOCH:-1767225600}
work=${EIF_CHECK_DIR:-$root/.hermetic/eif-check}
python=${PYTHON:-$root/.venv/bin/python}
hermetic=${HERMETIC:-$root/.venv/bin/hermetic}
export SOURCE_DATE_EPOCH=$epoch EIF_WHEEL_CACHE=${EIF_WHEEL_CACHE:-$root/.hermetic/eif-wheels} PYTHON=$python

log() { echo "eif-check: $*" >&2; }
die() { log "FAILED: $*"; exit 1; }
now() { date +%s.%N; }
since() { python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.1f}')" "$1" "$(now)"; }
start=$(now)

[ "$(id -u)" = 0 ] || die "needs root (mmdebstrap --mode=root, rootful buildah, chroot)"
missing=()
command -v mmdebstrap >/dev/null 2>&1 || missing+=(mmdebstrap)
command -v buildah >/dev/null 2>&1 || missing+=(buildah)
command -v cpio >/dev/null 2>&1 || missing+=(cpio)  # only for tests/eif/test_standin.py's cross-check
install_s=0
if [ ${#missing[@]} -gt 0 ]; then
    command -v apt-get >/dev/null 2>&1 || die "missing ${missing[*]} and no apt-get to install them"
    log "installing ${missing[*]}"
    t=$(now)
    apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >&2
    install_s=$(since "$t")
fi
[ -x "$python" ] || die "no $python: run make install first"

rm -rf "$work"
mkdir -p "$work"
mounted=()
unmount() { local m; for m in "${mounted[@]}"; do umount "$m" 2>/dev/null || true; done; mounted=(); }
cleanup() {
    unmount
    if [ -z "${EIF_CHECK_KEEP:-}" ]; then
        find "$work" -mindepth 1 -maxdepth 1 ! -name report.json -exec rm -rf {} +
    fi
}
trap cleanup EXIT

# 1. Two builds, each from its own staging of HEAD (uncommitted changes are ignored
#    unless EIF_ALLOW_DIRTY=1 asks for the working tree).
export EIF_IGNORE_DIRTY=1
declare -A digest secs
for n in 1 2; do
    "$here/eif-stage.sh" "$work/stage$n"
    log "build $n: $(git -C "$root" rev-parse --short HEAD)${EIF_ALLOW_DIRTY:+ + working tree}"
    t=$(now)
    digest[$n]=$("$work/stage$n/scripts/eif-image.sh" "$work/image$n")
    secs[$n]=$(since "$t")
    log "build $n: ${digest[$n]} in ${secs[$n]} s"
done
base_sha=$(sha256sum "$work/image1/base.tar" | cut -d' ' -f1)
if [ "${digest[1]}" != "${digest[2]}" ]; then
    base2=$(sha256sum "$work/image2/base.tar" | cut -d' ' -f1)
    [ "$base_sha" = "$base2" ] && where="the base root filesystems are equal ($base_sha): the image step differs" \
        || where="the base root filesystems already differ ($base_sha vs $base2)"
    die "two builds of the same tree gave different images: ${digest[1]} vs ${digest[2]}; $where (EIF_CHECK_KEEP=1 keeps both)"
fi

# 2. The image runs: chroot into its file system as nitro-cli's init would.
t=$(now)
layer=$("$python" -c 'import sys; from parent.eif.ramdisk import open_oci_image
image = open_oci_image(sys.argv[1]); assert len(image.layers) == 1, "one layer expected"
print(image.layers[0][0])' "$work/image1/oci")
mapfile -t image_env < <("$python" -c 'import sys; from parent.eif.ramdisk import open_oci_image
print("\n".join(open_oci_image(sys.argv[1]).environment))' "$work/image1/oci")
mapfile -t image_cmd < <("$python" -c 'import sys; from parent.eif.ramdisk import open_oci_image
print("\n".join(open_oci_image(sys.argv[1]).command))' "$work/image1/oci")
fs=$work/rootfs
mkdir "$fs"
tar -xf "$layer" -C "$fs"
# What AWS's init mounts before it runs the command: /proc and /dev (no /dev/nsm here).
mount -t proc proc "$fs/proc" && mounted+=("$fs/proc")
mount --bind /dev "$fs/dev" && mounted+=("$fs/dev")
run_in_image() { chroot --userspec=10001:10001 "$fs" /usr/bin/env -i "${image_env[@]}" "$@"; }
set +e
out=$(cd / && run_in_image "${image_cmd[@]}" 2>&1)
rc=$?
set -e
case "$rc:$out" in
    1:*/dev/nsm*) log "the image's command reaches the enclave runtime, which stops at the missing /dev/nsm";;
    *) die "the image's command (${image_cmd[*]}) did not reach the runtime: exit $rc: $(tail -c 2000 <<<"$out")";;
esac
run_in_image /usr/local/bin/python3 -c '
import importlib, pkgutil, enclave
mods = [m.name for m in pkgutil.walk_packages(enclave.__path__, "enclave.")]
for name in mods + ["torch", "numpy", "pyarrow", "boto3", "botocore", "cryptography", "cbor2"]:
    importlib.import_module(name)
import sys
assert "parent" not in sys.modules
print(len(mods))' > "$work/imports" || die "a module of the image does not import (see above)"
unmount
rm -rf "$fs"
smoke_s=$(since "$t")
log "the image runs: $(cat "$work/imports") enclave modules and the wheels import ($smoke_s s)"

# 3. Stand-in EIFs, measured.
measure() {  # $1 image dir -> $1.eif and $1.pcrs ("PCR0 PCR1 PCR2")
    # gzip level 1: a third of level 6's time, and which level is used does not matter
    # to what is checked (same image -> same PCRs, and which PCRs a change moves).
    "$python" -m parent.eif.standin --gzip-level 1 "$1/oci" "$1.eif" || die "no stand-in EIF from $1/oci"
    "$hermetic" measure-eif "$1.eif" --json > "$1.measure.json" || die "measure-eif failed on $1.eif"
    "$python" -c 'import json, sys; m = json.load(open(sys.argv[1]))["Measurements"]
print(m["PCR0"], m["PCR1"], m["PCR2"])' "$1.measure.json" > "$1.pcrs"
}
t=$(now)
measure "$work/image1"
read -r p0_1 p1_1 p2_1 < "$work/image1.pcrs"
eif_s=$(since "$t")
measure "$work/image2"
read -r p0_2 p1_2 p2_2 < "$work/image2.pcrs"
for p in "$p0_1" "$p1_1" "$p2_1"; do [[ "$p" =~ ^[0-9a-f]{96}$ ]] || die "measure-eif gave no PCR: '$p'"; done
[ "$p0_1 $p1_1 $p2_1" = "$p0_2 $p1_2 $p2_2" ] || die "the two images' EIFs measure differently"
log "stand-in EIF: PCR0 $p0_1 (same for both builds; $eif_s s)"

# 4. One byte more in enclave/: PCR0 and PCR2 move, PCR1 does not.
cp -a "$work/stage1" "$work/stage3"
printf '\n' >> "$work/stage3/enclave/__init__.py"
touch --date="@$epoch" "$work/stage3/enclave/__init__.py"
t=$(now)
digest3=$(EIF_BASE_TAR=$work/image1/base.tar "$work/stage3/scripts/eif-image.sh" "$work/image3")
measure "$work/image3"
read -r p0_3 p1_3 p2_3 < "$work/image3.pcrs"
variant_s=$(since "$t")
[ "$digest3" != "${digest[1]}" ] || die "a changed enclave/ gave the same image digest"
[ "$p1_3" = "$p1_1" ] || die "a change in enclave/ moved PCR1 (it covers only kernel, cmdline, bootstrap ramdisk)"
[ "$p0_3" != "$p0_1" ] || die "a change in enclave/ did not change PCR0"
[ "$p2_3" != "$p2_1" ] || die "a change in enclave/ did not change PCR2"
log "one byte more in enclave/__init__.py: image $digest3, PCR0 and PCR2 change, PCR1 does not ($variant_s s)"

total_s=$(since "$start")
"$python" - "$work/report.json" <<PY
import json, sys
json.dump({
    "commit": "$(git -C "$root" rev-parse HEAD)",
    "source_date_epoch": $epoch,
    "image_digest": "${digest[1]}",
    "base_rootfs_sha256": "$base_sha",
    "stand_in_eif": {"PCR0": "$p0_1", "PCR1": "$p1_1", "PCR2": "$p2_1"},
    "one_byte_change": {"image_digest": "$digest3", "PCR0": "$p0_3", "PCR1": "$p1_3", "PCR2": "$p2_3"},
    "seconds": {"install_tools": $install_s, "build_1": ${secs[1]}, "build_2": ${secs[2]}, "run_checks": $smoke_s,
                "stand_in_eif": $eif_s, "one_byte_variant": $variant_s, "total": $total_s},
}, open(sys.argv[1], "w"), indent=2)
PY
log "OK: two builds, one image ${digest[1]}; report in $work/report.json (${total_s} s)"
cat "$work/report.json"

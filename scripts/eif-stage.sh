#!/usr/bin/env bash
# Stage everything the enclave image is made of into DEST: what goes into it
# (enclave/, eif/entrypoint.py), what pins its base (eif/debian-packages.lock,
# eif/requirements-enclave.txt, eif/requirements-pip.txt) and the recipe itself
# (scripts/eif-base.sh, scripts/eif-image.sh), taken
# from the committed tree (git HEAD), with fixed permissions and mtimes so the
# image digest depends on content alone. Run DEST/scripts/eif-image.sh to build.
#   usage: scripts/eif-stage.sh DEST
#   EIF_ALLOW_DIRTY=1 stages the working tree instead (tracked + untracked, not
#   ignored): for trying changes, never for a release.
#   EIF_IGNORE_DIRTY=1 stages HEAD even when the working tree has changes (the
#   reproducibility test uses it: it builds the committed tree, whatever is edited).
set -euo pipefail
dest=${1:?usage: $0 DEST}
epoch=${SOURCE_DATE_EPOCH:-1767225600}
root=$(git -C "$(dirname "$0")/.." rev-parse --show-toplevel)
paths=(enclave eif/entrypoint.py eif/requirements-enclave.txt eif/requirements-pip.txt
       eif/debian-packages.lock scripts/eif-base.sh scripts/eif-image.sh)

mkdir -p "$dest"
if [ -n "${EIF_ALLOW_DIRTY:-}" ]; then
    echo "eif-stage: staging the WORKING TREE (EIF_ALLOW_DIRTY set): not a reproducible release" >&2
    # --ignore-failed-read: a tracked file deleted in the working tree is simply absent.
    (cd "$root" && git ls-files -z --cached --others --exclude-standard -- "${paths[@]}" \
        | tar --null --ignore-failed-read -T - -cf - 2>/dev/null) | tar -xf - -C "$dest"
else
    dirty=$(git -C "$root" status --porcelain --untracked-files=all -- "${paths[@]}")
    if [ -n "$dirty" ] && [ -z "${EIF_IGNORE_DIRTY:-}" ]; then
        echo "eif-stage: uncommitted changes to the image's sources (commit them, or set EIF_ALLOW_DIRTY=1):" >&2
        echo "$dirty" >&2
        exit 1
    fi
    git -C "$root" archive --format=tar HEAD -- "${paths[@]}" | tar -xf - -C "$dest"
fi
# Bytecode and caches never enter the image; modes and times are normalised.
find "$dest" -depth \( -name __pycache__ -o -name '*.pyc' -o -name '*.pyo' \) -exec rm -rf {} +
find "$dest" -type d -exec chmod 0755 {} +
find "$dest" -type f -exec chmod 0644 {} +
[ ! -d "$dest/scripts" ] || chmod 0755 "$dest"/scripts/*.sh
find "$dest" -exec touch --no-dereference --date="@${epoch}" {} +

#!/usr/bin/env bash
# make eif: Docker image -> nitro-cli build-enclave -> eif/hermetic.eif + eif/measurements.json.
#   env: EIF_TAG (default hermetic-enclave:build), EIF_OUT (default eif/hermetic.eif),
#        EIF_MEASUREMENTS (default eif/measurements.json), SIGNING_CERT + SIGNING_KEY
#        (sign the EIF: PCR8), HERMETIC (default .venv/bin/hermetic), plus those of
#        eif-docker-build.sh, eif-preflight.sh (EIF_SKIP_PREFLIGHT) and
#        find-python.sh (PYTHON).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
tag=${EIF_TAG:-hermetic-enclave:build}
out=${EIF_OUT:-$root/eif/hermetic.eif}
measurements=${EIF_MEASUREMENTS:-$root/eif/measurements.json}
hermetic=${HERMETIC:-$root/.venv/bin/hermetic}

# Fail before the (long) Docker build if the tool chain is not all here, or too old for a
# reproducible image (scripts/eif-preflight.sh says what to install or run).
"$here/eif-preflight.sh"
# The PCR cross-check below runs Python 3.11+ (python3.11 where python3 is older, as on
# Amazon Linux 2023); the EIF reader runs from the venv (make install).
python=$("$here/find-python.sh")
if [ ! -x "$hermetic" ]; then
    echo "eif: $hermetic not found: run 'make install' first" >&2
    exit 1
fi
sign=()
if [ -n "${SIGNING_CERT:-}${SIGNING_KEY:-}" ]; then
    if [ -z "${SIGNING_CERT:-}" ] || [ -z "${SIGNING_KEY:-}" ]; then
        echo "eif: set both SIGNING_CERT and SIGNING_KEY to sign the EIF" >&2
        exit 1
    fi
    sign=(--signing-certificate "$SIGNING_CERT" --private-key "$SIGNING_KEY")
fi

image_id=$("$here/eif-docker-build.sh" "$tag")
echo "eif: docker image $tag = $image_id" >&2

tmp_out=$(mktemp "$(dirname "$out")/.hermetic.eif.XXXXXX")
tmp_json=$(mktemp "$(dirname "$measurements")/.measurements.json.XXXXXX")
trap 'rm -f "$tmp_out" "$tmp_json"' EXIT
nitro-cli build-enclave --docker-uri "$tag" --output-file "$tmp_out" "${sign[@]}" > "$tmp_json"

# Cross-check nitro-cli's PCRs with our own EIF reader before publishing either file.
"$hermetic" measure-eif "$tmp_out" --json > "$tmp_json.ours"
"$python" - "$tmp_json" "$tmp_json.ours" <<'PY'
import json, sys
theirs = json.load(open(sys.argv[1]))["Measurements"]
ours = json.load(open(sys.argv[2]))["Measurements"]
keys = sorted(k for k in theirs if k.startswith("PCR"))
bad = [k for k in keys if theirs[k].lower() != ours.get(k, "").lower()]
if bad or sorted(k for k in ours if k.startswith("PCR")) != keys:
    sys.exit(f"eif: nitro-cli and hermetic measure-eif disagree on {bad or 'the PCR set'}")
PY
rm -f "$tmp_json.ours"
chmod 0644 "$tmp_out" "$tmp_json"
mv -f "$tmp_out" "$out"
mv -f "$tmp_json" "$measurements"
trap - EXIT
echo "eif: wrote $out and $measurements" >&2
cat "$measurements"

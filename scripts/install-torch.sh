#!/usr/bin/env bash
# Install torch's CPU build into the environment of PY, before the other requirements, so
# that pip never takes PyPI's default Linux build (CUDA: several GB of nvidia-* wheels).
#   usage: scripts/install-torch.sh PY
#   env: TORCH_INDEX (default https://download.pytorch.org/whl/cpu; set and empty: skip
#        this step, torch then comes from pip's default index like any other pin)
# The version is requirements.txt's torch pin; the CPU build is that version + "+cpu"
# (`torch==V` in requirements.txt matches it). In this order, so that no machine waits on
# an index it cannot reach:
#   1. torch V+cpu already installed (pip's metadata, torch is not imported): done;
#   2. not Linux: PyPI's torch wheels are CPU-only there: nothing to do here;
#   3. a torch V+cpu wheel pip finds with --no-index (its configured find-links): no network;
#   4. the CPU index, with a 30 s timeout.
set -euo pipefail
py=${1:?usage: $0 PY}
root=$(cd "$(dirname "$0")/.." && pwd)
version=$(sed -n 's/^torch==\([0-9][0-9.]*\).*/\1/p' "$root/requirements.txt")
if [ -z "$version" ]; then
    echo "hermetic: requirements.txt has no torch==VERSION pin" >&2
    exit 1
fi
want="$version+cpu"
installed=$("$py" -c 'import importlib.metadata as m; print(m.version("torch"))' 2>/dev/null || true)
if [ "$installed" = "$want" ]; then
    exit 0
fi
if [ "$(uname -s)" != Linux ]; then
    exit 0
fi
index=${TORCH_INDEX-https://download.pytorch.org/whl/cpu}
if [ -z "$index" ]; then
    echo "hermetic: TORCH_INDEX is empty: torch $version comes from the default index" \
         "(on Linux x86_64 PyPI's build, with CUDA)" >&2
    exit 0
fi
pip=("$py" -m pip install -q --disable-pip-version-check --no-deps)
if "${pip[@]}" --no-index "torch==$want" >/dev/null 2>&1; then
    echo "hermetic: installed torch $want from a local wheel (pip's find-links)" >&2
    exit 0
fi
echo "hermetic: installing torch $want (CPU only) from $index" >&2
if ! "${pip[@]}" --timeout 30 --retries 2 --index-url "$index" "torch==$want"; then
    echo "hermetic: could not install torch $want from $index: make it reachable, or put the wheel" \
         "in a pip find-links folder, or run 'make install TORCH_INDEX=' to take torch from the default" \
         "index (on Linux x86_64 that is the CUDA build, several GB)" >&2
    exit 1
fi

#!/usr/bin/env bash
# Create the virtual environment DIR unless a working one (Python 3.11+, with pip) is there.
#   usage: scripts/make-venv.sh DIR      env: PYTHON (see scripts/find-python.sh)
# Debian and Ubuntu ship the venv module's ensurepip apart (python3.X-venv): without it
# `python3 -m venv` leaves a half-made DIR with no pip. So check first, and install it
# as root, or say the command (scripts/apt-install.sh). A half-made or too old DIR is
# made again.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
dir=${1:?usage: $0 DIR}

if [ -x "$dir/bin/python" ] \
    && "$dir/bin/python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' >/dev/null 2>&1 \
    && "$dir/bin/python" -m pip --version >/dev/null 2>&1; then
    exit 0
fi
py=$("$here/find-python.sh")
version=$("$py" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
if ! "$py" -c 'import ensurepip, venv' >/dev/null 2>&1; then
    if command -v apt-get >/dev/null 2>&1; then
        "$here/apt-install.sh" "'$py -m venv' (Python's venv module)" "python$version-venv"
    else
        echo "hermetic: '$py -m venv' does not work here (no ensurepip): install the venv/pip package of Python $version" \
             "(Amazon Linux, Fedora: run as root: dnf install -y python$version-pip)" >&2
        exit 1
    fi
fi
if [ -e "$dir" ]; then
    if [ ! -f "$dir/pyvenv.cfg" ]; then
        echo "hermetic: $dir exists and is not a virtual environment: move it away" >&2
        exit 1
    fi
    echo "hermetic: $dir is incomplete or older than Python 3.11: making it again" >&2
    rm -rf "$dir"
fi
echo "hermetic: creating $dir with $py (Python $version)" >&2
"$py" -m venv "$dir"

#!/usr/bin/env bash
# Print the Python interpreter (3.11 or newer) for .venv and the EIF scripts.
#   PYTHON set: that interpreter, if it is 3.11+. Otherwise python3 when it is 3.11+,
#   else the newest of python3.14 ... python3.11 on PATH (Amazon Linux 2023's python3
#   is 3.9, with python3.11 as a package). None: one line saying what to install, exit 1.
set -euo pipefail

recent() { "$1" -c 'import sys; sys.exit(sys.version_info < (3, 11))' >/dev/null 2>&1; }

if [ -n "${PYTHON:-}" ]; then
    if recent "$PYTHON"; then
        echo "$PYTHON"
        exit 0
    fi
    echo "hermetic: PYTHON=$PYTHON is not a Python 3.11 or newer interpreter" >&2
    exit 1
fi
for candidate in python3 python3.14 python3.13 python3.12 python3.11; do
    if command -v "$candidate" >/dev/null 2>&1 && recent "$candidate"; then
        echo "$candidate"
        exit 0
    fi
done

have=$(python3 -c 'import platform; print(platform.python_version())' 2>/dev/null || echo "none")
if command -v dnf >/dev/null 2>&1; then
    fix="run as root: dnf install -y python3.11"
elif command -v apt-get >/dev/null 2>&1; then
    fix="run as root: apt-get update && apt-get install -y python3.11 python3.11-venv"
else
    fix="install Python 3.11 or newer (python3.11 on PATH)"
fi
echo "hermetic: Python 3.11 or newer is needed and python3 is $have: $fix" >&2
exit 1

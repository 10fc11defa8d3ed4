#!/usr/bin/env bash
# Install Debian/Ubuntu packages the project needs, the one way that needs no sudo:
#   usage: scripts/apt-install.sh WHAT PACKAGE...
#   as root: apt-get update, then apt-get install -y PACKAGE...;
#   not root: one line with the exact command to run as root, exit 1;
#   no apt-get: one line naming the packages, exit 1.
set -euo pipefail
what=${1:?usage: $0 WHAT PACKAGE...}
shift
[ $# -gt 0 ] || { echo "usage: $0 WHAT PACKAGE..." >&2; exit 2; }

if ! command -v apt-get >/dev/null 2>&1; then
    echo "hermetic: $what is missing: it comes from the Debian/Ubuntu package(s) $*, and this system has no apt-get" >&2
    exit 1
fi
if [ "$(id -u)" != 0 ]; then
    echo "hermetic: $what is missing: run as root: apt-get update && apt-get install -y $*" >&2
    exit 1
fi
echo "hermetic: $what is missing: installing $* (apt-get, as root)" >&2
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@"

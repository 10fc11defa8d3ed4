"""Entrypoint of the Hermetic enclave image: prepare the enclave VM, drop root, run `python -m enclave`.

nitro-cli keeps only the Docker image's command and environment (not USER), so in
a Nitro Enclave this runs as root. As root it does the three things the runtime
cannot do unprivileged, then becomes the image's non-root user and execs the runtime:

1. bring the loopback interface up (it starts down in an enclave; the KMS
   forwarder listens on 127.0.0.1, the S3 one on 127.0.0.2);
2. map the regional KMS name to 127.0.0.1 and the regional S3 name to 127.0.0.2
   in /etc/hosts, so boto3 connects to the forwarders while TLS still verifies
   the real names;
3. let the non-root user bind the forwarders' port 443
   (net.ipv4.ip_unprivileged_port_start) and open /dev/nsm.

Started as a non-root user (e.g. `docker run` of the image), it skips those steps.
Addresses are fixed here, so they are part of the measured image: control
vsock://any:5000, KMS relay on the parent vsock://3:8000, S3 relay (budget
ledgers) vsock://3:8001, forwarder port 443.
"""
from __future__ import annotations

import fcntl
import os
import pwd
import socket
import struct
import sys

CONTROL = "vsock://any:5000"
KMS_RELAY = "vsock://3:8000"
S3_RELAY = "vsock://3:8001"
FORWARD_PORT = 443
KMS_FORWARD_HOST = "127.0.0.1"
# Its own loopback address: both forwarders listen on 443, so TLS verifies the real names.
S3_FORWARD_HOST = "127.0.0.2"
RUN_AS = "enclave"
NSM_DEVICE = "/dev/nsm"
HOSTS = "/etc/hosts"
UNPRIVILEGED_PORT_START = "/proc/sys/net/ipv4/ip_unprivileged_port_start"

# linux/sockios.h and linux/if.h
SIOCGIFFLAGS = 0x8913
SIOCSIFFLAGS = 0x8914
IFF_UP = 0x1
_IFREQ = struct.Struct("16sH22x")  # struct ifreq: name[IFNAMSIZ], short flags, padding to 40 bytes


def _check_region(region: str) -> str:
    if not region or not all(c.isalnum() or c == "-" for c in region):
        raise SystemExit(f"entrypoint: invalid AWS region {region!r}")
    return region


def kms_host(region: str) -> str:
    return f"kms.{_check_region(region)}.amazonaws.com"


def s3_host(region: str) -> str:
    return f"s3.{_check_region(region)}.amazonaws.com"


def runtime_argv(python: str, region: str) -> list[str]:
    return [
        python, "-m", "enclave",
        "--listen", CONTROL,
        "--kms-relay", KMS_RELAY,
        "--kms-url", f"https://{kms_host(region)}",
        "--kms-forward-port", str(FORWARD_PORT),
        "--s3-relay", S3_RELAY,
        "--s3-url", f"https://{s3_host(region)}",
        "--s3-forward-host", S3_FORWARD_HOST,
        "--s3-forward-port", str(FORWARD_PORT),
    ]


def hosts_with(existing: str, address: str, host: str) -> str:
    """/etc/hosts text with `address host` added once (idempotent)."""
    lines = existing.splitlines()
    for line in lines:
        fields = line.split("#", 1)[0].split()
        if fields and fields[0] == address and host in fields[1:]:
            return existing
    if not any(line.split("#", 1)[0].split()[1:2] == ["localhost"] for line in lines):
        lines.append("127.0.0.1 localhost")
    lines.append(f"{address} {host}")
    return "\n".join(lines) + "\n"


def hosts_with_kms(existing: str, host: str) -> str:
    return hosts_with(existing, KMS_FORWARD_HOST, host)


def hosts_for_region(existing: str, region: str) -> str:
    """/etc/hosts text mapping the regional KMS and S3 names to their forwarders."""
    return hosts_with(hosts_with_kms(existing, kms_host(region)), S3_FORWARD_HOST, s3_host(region))


def bring_up_loopback() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        request = _IFREQ.pack(b"lo", 0)
        flags = _IFREQ.unpack(fcntl.ioctl(sock.fileno(), SIOCGIFFLAGS, request))[1]
        if not flags & IFF_UP:
            fcntl.ioctl(sock.fileno(), SIOCSIFFLAGS, _IFREQ.pack(b"lo", flags | IFF_UP))


def prepare_as_root(region: str) -> None:
    bring_up_loopback()
    try:
        with open(HOSTS, encoding="utf-8") as f:
            existing = f.read()
    except FileNotFoundError:
        existing = ""
    with open(HOSTS, "w", encoding="utf-8") as f:
        f.write(hosts_for_region(existing, region))
    with open(UNPRIVILEGED_PORT_START, "w", encoding="ascii") as f:
        f.write(str(FORWARD_PORT))
    user = pwd.getpwnam(RUN_AS)
    if os.path.exists(NSM_DEVICE):
        os.chown(NSM_DEVICE, user.pw_uid, user.pw_gid)
    os.setgroups([])
    os.setgid(user.pw_gid)
    os.setuid(user.pw_uid)
    os.environ["HOME"] = user.pw_dir
    if os.getuid() == 0 or os.geteuid() == 0:
        raise SystemExit("entrypoint: could not drop root")


def main() -> None:
    region = os.environ.get("HERMETIC_REGION", "")
    argv = runtime_argv(sys.executable, region)
    if os.geteuid() == 0:
        prepare_as_root(region)
    sys.stderr.write(f"entrypoint: exec {' '.join(argv[1:])}\n")
    sys.stderr.flush()
    os.execv(argv[0], argv)


if __name__ == "__main__":
    main()

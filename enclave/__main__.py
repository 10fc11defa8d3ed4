"""The enclave's production entry point: ``python -m enclave``.

    python -m enclave --listen vsock://any:5000 --kms-relay vsock://3:8000 \\
        --kms-url https://kms.us-east-1.amazonaws.com --kms-forward-port 443 \\
        --s3-relay vsock://3:8001 --s3-url https://s3.us-east-1.amazonaws.com

It opens the real Nitro Secure Module (`/dev/nsm`) and serves parent sessions until
SIGTERM. Budget ledgers are S3 only (`s3://...?owner=`), reached through the S3 relay
with the session's credentials, and every slot must be protected by Object Lock;
without `--s3-relay` every job on a sealed dataset is refused. It never imports
`parent`: the mock NSM and every other local stand-in are out of reach of this path,
so an image built from the `enclave` package alone cannot be talked into using them.
"""
from __future__ import annotations

import argparse
import logging
import signal
import sys
from collections.abc import Sequence
from types import FrameType
from urllib.parse import urlsplit

from enclave.errors import ConfigError, HermeticError
from enclave.native.nsm_device import DeviceNsm
from enclave.transport.address import Address, parse_address
from enclave.wiring import RuntimeConfig, SocketEnclave

log = logging.getLogger("enclave")

DEFAULT_LISTEN = "vsock://any:5000"
DEFAULT_KMS_RELAY = "vsock://3:8000"
_LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})


def _address(text: str) -> Address:
    try:
        return parse_address(text)
    except HermeticError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _port(text: str) -> int:
    if not text.isdigit() or not 0 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(f"expected a TCP port 0-65535, got {text!r}")
    return int(text)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m enclave", description=__doc__.splitlines()[0])
    parser.add_argument("--listen", type=_address, default=_address(DEFAULT_LISTEN),
                        help=f"control address parents connect to (default {DEFAULT_LISTEN})")
    parser.add_argument("--kms-relay", type=_address, default=_address(DEFAULT_KMS_RELAY),
                        help=f"the parent's KMS relay (default {DEFAULT_KMS_RELAY})")
    parser.add_argument("--kms-url", required=True,
                        help="KMS endpoint boto3 uses, e.g. https://kms.REGION.amazonaws.com"
                             " ({port} is replaced with the forwarder's port)")
    parser.add_argument("--kms-forward-port", type=_port, default=443,
                        help="loopback port of the TCP-to-relay forwarder (default 443)")
    parser.add_argument("--kms-ca-bundle", default=None,
                        help="CA bundle for the KMS TLS connection (default: botocore's)")
    parser.add_argument("--s3-relay", type=_address, default=None,
                        help="the parent's S3 relay, for the budget ledger (default: none, no S3)")
    parser.add_argument("--s3-url", default=None,
                        help="S3 endpoint boto3 uses with --s3-relay, e.g. https://s3.REGION.amazonaws.com")
    parser.add_argument("--s3-forward-host", default="127.0.0.2",
                        help="loopback address of the S3 forwarder (default 127.0.0.2: 127.0.0.1:443 is KMS's)")
    parser.add_argument("--s3-forward-port", type=_port, default=443,
                        help="port of the S3 forwarder (default 443)")
    parser.add_argument("--s3-ca-bundle", default=None,
                        help="CA bundle for the S3 TLS connection (default: botocore's)")
    parser.add_argument("--sessions", type=int, default=None, help="exit after this many sessions")
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    return parser


def _check_tls(option: str, value: str) -> None:
    url = urlsplit(value)
    if url.scheme != "https" and not (url.scheme == "http" and url.hostname in _LOOPBACK_HOSTS):
        # Plain HTTP through the parent's relay would let the parent read and forge the traffic.
        raise ConfigError(f"{option} must be https:// (http:// only for a loopback test endpoint), got {value!r}")


def config_from_args(args: argparse.Namespace) -> RuntimeConfig:
    _check_tls("--kms-url", args.kms_url)
    if (args.s3_relay is None) != (args.s3_url is None):
        raise ConfigError("--s3-relay and --s3-url go together")
    if args.s3_url is not None:
        _check_tls("--s3-url", args.s3_url)
    return RuntimeConfig(
        control=args.listen,
        kms_relay=args.kms_relay,
        kms_url=args.kms_url,
        kms_forward_port=args.kms_forward_port,
        kms_ca_bundle=args.kms_ca_bundle,
        s3_relay=args.s3_relay,
        s3_url=args.s3_url or RuntimeConfig.s3_url,
        s3_forward_host=args.s3_forward_host,
        s3_forward_port=args.s3_forward_port,
        s3_ca_bundle=args.s3_ca_bundle,
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        config = config_from_args(args)
        nsm = DeviceNsm()
    except HermeticError as err:
        log.error("cannot start: %s", err)
        return 1
    try:
        runtime = SocketEnclave(config, nsm, s3_ledgers=True)

        def stop(signum: int, frame: FrameType | None) -> None:
            del frame
            log.info("signal %d: stopping after the current session", signum)
            runtime.stop()

        signal.signal(signal.SIGTERM, stop)
        log.info("enclave listening on %s, KMS relay %s, KMS %s, S3 relay %s", runtime.control_address,
                 config.kms_relay, config.kms_url, config.s3_relay or "none")
        runtime.serve(sessions=args.sessions)
    except HermeticError as err:
        log.error("enclave runtime failed: %s", err)
        return 1
    finally:
        nsm.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())

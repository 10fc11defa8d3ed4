"""`hermetic kms-emulator serve`: run the local KMS emulator until SIGTERM / SIGINT."""
from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from pathlib import Path
from types import FrameType

from enclave.errors import ConfigError
from parent.commands.output import add_json_flag
from parent.storage import write_atomic


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("kms-emulator", help="local KMS emulator (boto3-compatible)")
    sub = parser.add_subparsers(dest="kms_command", metavar="ACTION")
    sub.required = True
    serve = sub.add_parser("serve", help="serve the KMS JSON protocol on a local port")
    serve.add_argument("--state", required=True, type=Path, help="state directory (keys persist here)")
    serve.add_argument("--principals", required=True, type=Path, help="JSON map of access keys")
    serve.add_argument("--root", required=True, type=Path, help="attestation root certificate (PEM/DER)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=0, help="0 picks a free port")
    serve.add_argument("--ready-file", type=Path, help="write the endpoint URL here once listening")
    serve.add_argument("--account-id", default="111122223333")
    serve.add_argument("--region", default="us-east-1")
    serve.add_argument("--tls-cert", type=Path, help="PEM certificate for HTTPS")
    serve.add_argument("--tls-key", type=Path, help="PEM private key for HTTPS")
    add_json_flag(serve, help='announce readiness as {"event": "ready", "url": URL} instead of "ready URL"')
    serve.set_defaults(func=run)


def _write_ready(path: Path, url: str) -> None:
    write_atomic(path.resolve(), (url + "\n").encode())


def run(args: argparse.Namespace) -> int:
    # Imported here: a stand-in, never loaded by the production commands or their --help.
    from parent.local.kms import KmsEmulator, load_principals, load_root_der

    if (args.tls_cert is None) != (args.tls_key is None):
        raise ConfigError("--tls-cert and --tls-key must be given together")
    if not 0 <= args.port <= 65535:
        raise ConfigError(f"--port {args.port} is not a TCP port")
    emulator = KmsEmulator(
        args.state,
        load_principals(args.principals),
        load_root_der(args.root),
        host=args.host,
        port=args.port,
        account_id=args.account_id,
        region=args.region,
        tls=(args.tls_cert, args.tls_key) if args.tls_cert else None,
    )
    stop = threading.Event()

    def _on_signal(signum: int, frame: FrameType | None) -> None:
        del signum, frame
        stop.set()

    previous = {sig: signal.signal(sig, _on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        url = emulator.start()
        if args.ready_file is not None:
            _write_ready(args.ready_file, url)
        # Launchers block on this line: readiness, not a timer.
        print(json.dumps({"event": "ready", "url": url}) if args.json else f"ready {url}", flush=True)
        while not stop.wait(0.5):
            pass
    finally:
        emulator.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    print("KMS emulator stopped", file=sys.stderr, flush=True)
    return 0

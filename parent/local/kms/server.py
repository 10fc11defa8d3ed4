"""The KMS emulator's HTTP front: the AWS JSON 1.1 protocol, so boto3 works unchanged.

    POST /   X-Amz-Target: TrentService.<Operation>
             Content-Type: application/x-amz-json-1.1
             Authorization: AWS4-HMAC-SHA256 ... (verified against the principal map)

Blob members travel as base64 strings; errors are HTTP 4xx/5xx with
`{"__type": "<Code>", "message": "..."}`. Requests are logged with operation,
principal and outcome; bodies, plaintexts and keys never are.
"""
from __future__ import annotations

import base64
import json
import logging
import ssl
import threading
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from socket import socket
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

from enclave.errors import ConfigError
from parent.local.kms.errors import (
    KmsApiError,
    SerializationException,
    UnknownOperationException,
    ValidationException,
)
from parent.local.kms.service import AttestationVerifier, KmsService, new_request_id
from parent.local.kms.sigv4 import Principal, SigV4Verifier
from parent.local.kms.store import KeyStore
from parent.local.kms.sts import SessionCredentials, new_session

log = logging.getLogger(__name__)

TARGET_PREFIX = "TrentService."
CONTENT_TYPE = "application/x-amz-json-1.1"
MAX_BODY_BYTES = 1024 * 1024


def _to_wire(value: Any) -> Any:
    if isinstance(value, (bytes, bytearray)):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, dict):
        return {k: _to_wire(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_to_wire(v) for v in value]
    return value


class _Handler(BaseHTTPRequestHandler):
    server: _KmsHttpServer
    protocol_version = "HTTP/1.1"
    server_version = "HermeticKmsEmulator/1"
    timeout = 30

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s %s", self.address_string(), format % args)

    def _send(self, status: int, payload: Mapping[str, Any], request_id: str) -> None:
        body = json.dumps(_to_wire(dict(payload))).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", CONTENT_TYPE)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("x-amzn-RequestId", request_id)
        self.end_headers()
        self.wfile.write(body)

    def _error(self, err: KmsApiError, request_id: str) -> None:
        self._send(err.status, {"__type": err.aws_type, "message": str(err)}, request_id)

    def do_GET(self) -> None:
        self._error(UnknownOperationException("KMS accepts only POST /"), new_request_id())

    def do_POST(self) -> None:
        request_id = new_request_id()
        emulator = self.server.emulator
        operation = "?"
        caller = "-"
        try:
            length_text = self.headers.get("Content-Length")
            if length_text is None or not length_text.isdigit():
                self.close_connection = True
                raise SerializationException("Content-Length is required")
            length = int(length_text)
            if length > MAX_BODY_BYTES:
                self.close_connection = True
                raise ValidationException(f"request body larger than {MAX_BODY_BYTES} bytes")
            body = self.rfile.read(length)
            target = self.headers.get("X-Amz-Target", "")
            if not target.startswith(TARGET_PREFIX):
                raise UnknownOperationException("X-Amz-Target must be TrentService.<Operation>")
            operation = target[len(TARGET_PREFIX) :]
            content_type = self.headers.get("Content-Type", "").split(";")[0].strip().lower()
            if content_type != CONTENT_TYPE:
                raise SerializationException(f"Content-Type must be {CONTENT_TYPE}")
            split = urlsplit(self.path)
            verified = emulator.verifier.verify(
                method="POST",
                path=split.path,
                query=split.query,
                headers=list(self.headers.items()),
                body=body,
                now=emulator.clock(),
            )
            caller = verified.principal.arn
            try:
                params = json.loads(body or b"{}")
            except ValueError:
                raise SerializationException("request body is not valid JSON") from None
            response = emulator.service.handle(operation, caller, params)
        except KmsApiError as err:
            log.info("KMS %s by %s: %s", operation, caller, err.aws_type)
            self._error(err, request_id)
            return
        except Exception:  # a bug must not leak details (or secrets) to the caller
            log.exception("KMS %s by %s: internal error", operation, caller)
            self._error(KmsApiError("internal error in the KMS emulator"), request_id)
            return
        log.info("KMS %s by %s: ok", operation, caller)
        self._send(200, response, request_id)


class _KmsHttpServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def __init__(
        self,
        address: tuple[str, int],
        emulator: KmsEmulator,
        tls_context: ssl.SSLContext | None,
    ) -> None:
        self.emulator = emulator
        self._tls = tls_context
        super().__init__(address, _Handler)

    def finish_request(self, request: Any, client_address: Any) -> None:
        # The TLS handshake runs in the worker thread, so a slow client never
        # stalls the accept loop.
        if self._tls is not None:
            try:
                request.settimeout(_Handler.timeout)
                request = self._tls.wrap_socket(request, server_side=True)
            except (ssl.SSLError, OSError) as exc:
                log.info("KMS emulator TLS handshake failed: %s", type(exc).__name__)
                return
        super().finish_request(request, client_address)

    def handle_error(self, request: socket | tuple[bytes, socket], client_address: Any) -> None:
        log.debug("KMS emulator connection error from %s", client_address, exc_info=True)


class KmsEmulator:
    """A local KMS: real HTTP, real SigV4 checks, real key policies and attestation checks."""

    def __init__(
        self,
        state_dir: Path,
        principals: Mapping[str, Principal],
        attestation_root_der: bytes,
        host: str = "127.0.0.1",
        port: int = 0,
        account_id: str = "111122223333",
        region: str = "us-east-1",
        tls: tuple[Path, Path] | None = None,
        *,
        clock: Callable[[], datetime] | None = None,
        verify_document: AttestationVerifier | None = None,
    ) -> None:
        if not principals:
            raise ConfigError("the KMS emulator needs at least one principal")
        self.clock: Callable[[], datetime] = clock or (lambda: datetime.now(UTC))
        self.host = host
        self.port = port
        self.verifier = SigV4Verifier(principals, region=region)
        self.service = KmsService(
            KeyStore(Path(state_dir)),
            attestation_root_der=attestation_root_der,
            account_id=account_id,
            region=region,
            clock=self.clock,
            verify_document=verify_document,
            secure_transport=tls is not None,
        )
        self._tls_context: ssl.SSLContext | None = None
        if tls is not None:
            cert, key = tls
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.minimum_version = ssl.TLSVersion.TLSv1_2
            try:
                context.load_cert_chain(certfile=str(cert), keyfile=str(key))
            except (OSError, ssl.SSLError) as exc:
                raise ConfigError(f"cannot load the KMS emulator TLS certificate: {exc}") from None
            self._tls_context = context
        self._server: _KmsHttpServer | None = None
        self._thread: threading.Thread | None = None
        self.url = ""

    def assume_role(
        self, role_arn: str, session_name: str = "hermetic", lifetime: timedelta = timedelta(hours=1)
    ) -> SessionCredentials:
        """Issue temporary credentials for `role_arn`, as STS AssumeRole does, expiring
        `lifetime` after the emulator's clock; requests signed with them act as the
        role's assumed-role ARN, and after the expiry get ExpiredTokenException."""
        principal, creds = new_session(role_arn, session_name, self.clock(), lifetime)
        self.verifier.add_principal(creds.access_key_id, principal)
        log.info("issued temporary credentials for %s until %s", creds.arn, creds.expiration.isoformat())
        return creds

    def start(self) -> str:
        """Bind, listen and serve in a background thread; return the endpoint URL."""
        if self._server is not None:
            return self.url
        try:
            server = _KmsHttpServer((self.host, self.port), self, self._tls_context)
        except OSError as exc:
            raise ConfigError(f"KMS emulator cannot listen on {self.host}:{self.port}: {exc}") from None
        host, port = str(server.server_address[0]), int(server.server_address[1])
        scheme = "https" if self._tls_context is not None else "http"
        self.url = f"{scheme}://{host}:{port}"
        self._server = server
        # A short poll interval keeps stop() prompt (shutdown waits for the next poll).
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="kms-emulator", daemon=True
        )
        self._thread.start()
        log.info("KMS emulator listening on %s", self.url)
        return self.url

    def stop(self) -> None:
        server, thread = self._server, self._thread
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if thread is not None:
            thread.join()
        self._server = None
        self._thread = None
        log.info("KMS emulator on %s stopped", self.url)

    def __enter__(self) -> KmsEmulator:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

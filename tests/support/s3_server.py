"""A real S3-compatible HTTP server on loopback: moto's S3 in server mode, made strict where moto is lax.

moto (the pinned moto[server]) answers S3's REST API with conditional writes
(`If-None-Match: *` -> 412 PreconditionFailed), Object Lock (COMPLIANCE retention,
a versioned delete refused with AccessDenied, a plain delete leaving a delete marker)
and checksums. Two things it does not do, which this wrapper adds in front of it:

- **atomic conditional writes**: moto checks `If-None-Match` and then stores, with other
  requests running in between, so two racing creates can both win. Requests are
  handled one at a time here, as S3 makes each conditional write atomic.
- **`x-amz-expected-bucket-owner`**: moto ignores it. Here a value other than the
  server's account id is refused with 403 AccessDenied, as S3 refuses it.

It also records the access key id each request was signed with (`S3Server.access_keys`),
so tests can see which credentials reached S3.

    with s3_server() as server:
        client = server.client()
        client.create_bucket(Bucket=server.unique_bucket("ledger"), ObjectLockEnabledForBucket=True)

moto keeps its state per process: buckets of one server are visible to every other,
so tests name buckets with `unique_bucket`.
"""
from __future__ import annotations

import re
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError
from moto.core import DEFAULT_ACCOUNT_ID
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
from werkzeug.serving import make_server

READY_TIMEOUT = 10.0

StartResponse = Callable[..., Any]
WsgiApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


class _Strict:
    """WSGI middleware: one request at a time, and the expected-bucket-owner check."""

    def __init__(self, app: WsgiApp, account_id: str) -> None:
        self._app = app
        self._account_id = account_id
        self._lock = threading.Lock()
        self.access_keys: list[str] = []

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        credential = re.search(r"Credential=([^/,\s]+)/", environ.get("HTTP_AUTHORIZATION", ""))
        if credential:
            self.access_keys.append(credential.group(1))
        expected = environ.get("HTTP_X_AMZ_EXPECTED_BUCKET_OWNER")
        if expected is not None and expected != self._account_id:
            body = (b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>AccessDenied</Code>'
                    b"<Message>Access Denied</Message></Error>")
            start_response("403 Forbidden", [("Content-Type", "application/xml"), ("Content-Length", str(len(body)))])
            return [body]
        with self._lock:
            # Drain the response inside the lock: the write happens while moto builds it.
            return [b"".join(self._app(environ, start_response))]


@dataclass(frozen=True)
class S3Server:
    endpoint: str
    account_id: str
    region: str = "us-east-1"
    access_keys: list[str] = field(default_factory=list)  # every signed request's access key id, in order

    def client(self, *, max_attempts: int = 1, **config: Any) -> Any:
        """A boto3 S3 client for this server (one attempt: failures show at once)."""
        return boto3.session.Session().client(
            "s3",
            endpoint_url=self.endpoint,
            region_name=self.region,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
            config=Config(retries={"max_attempts": max_attempts, "mode": "standard"}, connect_timeout=5,
                          read_timeout=10, **config),
        )

    @staticmethod
    def unique_bucket(stem: str) -> str:
        return f"{stem}-{uuid.uuid4().hex[:16]}"


def _wait_ready(server: S3Server) -> None:
    """Poll with a real request until the server answers (bounded by READY_TIMEOUT)."""
    client = server.client(max_attempts=1)
    deadline = threading.Event()
    timer = threading.Timer(READY_TIMEOUT, deadline.set)
    timer.start()
    try:
        while not deadline.is_set():
            try:
                client.list_buckets()
                return
            except (BotoCoreError, ClientError):
                deadline.wait(0.01)
        raise RuntimeError(f"S3 stand-in at {server.endpoint} did not answer within {READY_TIMEOUT}s")
    finally:
        timer.cancel()


@contextmanager
def s3_server() -> Iterator[S3Server]:
    """Start moto's S3 on 127.0.0.1 (a free port), yield it once it answers, stop it after."""
    app = _Strict(DomainDispatcherApplication(create_backend_app), DEFAULT_ACCOUNT_ID)
    httpd = make_server("127.0.0.1", 0, app, threaded=True, request_handler=MotoRequestHandler)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    server = S3Server(endpoint=f"http://127.0.0.1:{httpd.server_port}", account_id=DEFAULT_ACCOUNT_ID,
                      access_keys=app.access_keys)
    try:
        _wait_ready(server)
        yield server
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()

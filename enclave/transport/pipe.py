"""A raw, bidirectional byte relay: accept on one address, dial an upstream per connection.

Both the in-enclave TCP forwarder and the parent's KMS relay are this server
with a different listening address and upstream. It never looks at the bytes
(for KMS they are TLS records that end inside the enclave); a `tap` can watch
them for tests.

Each connection gets two threads, one per direction, each moving at most
`buffer_size` bytes at a time with blocking sockets, so a slow side holds the
other back instead of filling memory. EOF in one direction becomes a
half-close (shutdown SHUT_WR) on the other socket; the connection is closed
when both directions ended. An error in either direction aborts both.
"""
from __future__ import annotations

import contextlib
import logging
import select
import socket
import threading
from collections.abc import Callable

from enclave.errors import TransportError
from enclave.transport.address import Address
from enclave.transport.framing import Tap
from enclave.transport.sockets import Listener, listen

log = logging.getLogger(__name__)

DEFAULT_MAX_CONNECTIONS = 16
DEFAULT_BUFFER_SIZE = 64 * 1024


class _Connection:
    def __init__(self, server: ByteRelayServer, inbound: socket.socket, number: int) -> None:
        self.server = server
        self.inbound = inbound
        self.upstream: socket.socket | None = None
        self.number = number
        self._lock = threading.Lock()
        self._aborted = False
        self._open_directions = 2
        self.threads: list[threading.Thread] = []

    def start(self) -> None:
        t = threading.Thread(
            target=self._run, name=f"{self.server.name}-conn{self.number}", daemon=True
        )
        self.threads.append(t)
        t.start()

    def _run(self) -> None:
        try:
            upstream = self.server.connect_upstream()
        except TransportError as exc:
            log.warning("%s: connection %d: %s", self.server.name, self.number, exc)
            self._close_all()
            return
        except Exception:
            log.exception("%s: connection %d: upstream dial failed", self.server.name, self.number)
            self._close_all()
            return
        with self._lock:
            self.upstream = upstream
            aborted = self._aborted
        if aborted:
            self._close_all()
            return
        back = threading.Thread(
            target=self._pump,
            args=(upstream, self.inbound, "sent"),
            name=f"{self.server.name}-conn{self.number}-up",
            daemon=True,
        )
        with self._lock:
            self.threads.append(back)
        back.start()
        self._pump(self.inbound, upstream, "recv")

    def _pump(self, src: socket.socket, dst: socket.socket, direction: str) -> None:
        buf = bytearray(self.server.buffer_size)
        view = memoryview(buf)
        tap = self.server.tap
        try:
            while True:
                n = src.recv_into(buf)
                if n == 0:
                    # Pass the half-close on so request/response protocols finish.
                    with contextlib.suppress(OSError):
                        dst.shutdown(socket.SHUT_WR)
                    break
                if tap is not None:
                    tap(direction, bytes(view[:n]))
                dst.sendall(view[:n])
        except OSError as exc:
            if not self._aborted:
                log.debug("%s: connection %d %s: %s", self.server.name, self.number, direction, exc)
            self.abort()
        finally:
            with self._lock:
                self._open_directions -= 1
                last = self._open_directions == 0
            if last:
                self._close_all()

    def abort(self) -> None:
        with self._lock:
            self._aborted = True
            socks = [s for s in (self.inbound, self.upstream) if s is not None]
        for s in socks:
            # shutdown wakes a recv blocked in the other direction's thread.
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)

    def _close_all(self) -> None:
        for s in (self.inbound, self.upstream):
            if s is not None:
                with contextlib.suppress(OSError):
                    s.close()
        self.server._forget(self)

    def alive(self) -> bool:
        with self._lock:
            return any(t.is_alive() for t in self.threads)

    def join(self) -> None:
        while True:
            with self._lock:
                pending = [t for t in self.threads if t.is_alive() and t is not threading.current_thread()]
            if not pending:
                return
            for t in pending:
                t.join()


class ByteRelayServer:
    """Accept connections on `listen_addr` and splice each to `connect_upstream()`."""

    def __init__(
        self,
        listen_addr: Address,
        connect_upstream: Callable[[], socket.socket],
        *,
        name: str = "relay",
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        tap: Tap | None = None,
        buffer_size: int = DEFAULT_BUFFER_SIZE,
    ) -> None:
        if max_connections < 1:
            raise ValueError("max_connections must be at least 1")
        self.listen_addr = listen_addr
        self.connect_upstream = connect_upstream
        self.name = name
        self.max_connections = max_connections
        self.tap = tap
        self.buffer_size = buffer_size
        self._listener: Listener | None = None
        self._accept_thread: threading.Thread | None = None
        self._wake_r: socket.socket | None = None
        self._wake_w: socket.socket | None = None
        self._lock = threading.Lock()
        self._active: set[_Connection] = set()
        # Connections whose threads may still be running (closed ones finish
        # their last statements after leaving _active); stop() joins them all.
        self._started: list[_Connection] = []
        self._count = 0
        self._stopping = False

    @property
    def address(self) -> Address:
        """The bound address (the real port when port 0 was asked)."""
        if self._listener is None:
            raise TransportError(f"{self.name} is not started")
        return self._listener.address

    @property
    def active_connections(self) -> int:
        with self._lock:
            return len(self._active)

    def start(self) -> Address:
        if self._listener is not None:
            raise TransportError(f"{self.name} is already started")
        self._listener = listen(self.listen_addr)
        self._wake_r, self._wake_w = socket.socketpair()
        self._accept_thread = threading.Thread(
            target=self._accept_loop, name=f"{self.name}-accept", daemon=True
        )
        self._accept_thread.start()
        log.info("%s listening on %s", self.name, self._listener.address)
        return self._listener.address

    def _accept_loop(self) -> None:
        assert self._listener is not None and self._wake_r is not None
        poller = select.poll()
        poller.register(self._listener.fileno(), select.POLLIN)
        poller.register(self._wake_r.fileno(), select.POLLIN)
        while True:
            ready = {fd for fd, _ in poller.poll()}
            if self._wake_r.fileno() in ready or self._stopping:
                return
            try:
                conn, _peer = self._listener.accept()
            except TransportError as exc:
                log.warning("%s: %s", self.name, exc)
                continue
            with self._lock:
                if self._stopping:
                    conn.close()
                    return
                if len(self._active) >= self.max_connections:
                    log.warning(
                        "%s: refusing a connection, %d already open", self.name, self.max_connections
                    )
                    conn.close()
                    continue
                self._count += 1
                c = _Connection(self, conn, self._count)
                self._active.add(c)
                self._started = [x for x in self._started if x.alive()] + [c]
            c.start()

    def _forget(self, conn: _Connection) -> None:
        with self._lock:
            self._active.discard(conn)

    def stop(self) -> None:
        """Stop accepting, abort every open connection and join all threads."""
        if self._listener is None:
            return
        with self._lock:
            self._stopping = True
        if self._wake_w is not None:
            with contextlib.suppress(OSError):
                self._wake_w.send(b"x")
        if self._accept_thread is not None:
            self._accept_thread.join()
        self._listener.close()
        with self._lock:
            active = list(self._active)
            started = list(self._started)
        for c in active:
            c.abort()
        for c in started:
            c.join()
        for s in (self._wake_r, self._wake_w):
            if s is not None:
                s.close()
        self._listener = None
        log.info("%s stopped", self.name)

    def __enter__(self) -> ByteRelayServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

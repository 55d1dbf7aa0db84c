"""A TCP proxy that tests cut to make a server (PostgreSQL, Redis, anything on TCP) go away and return.

    with TcpProxy("127.0.0.1", 5432) as proxy:   # listens on 127.0.0.1:proxy.port
        url = f"postgresql+psycopg://postgres@127.0.0.1:{proxy.port}/test"
        ...                      # clients connect through the proxy as to the server itself
        proxy.cut()              # every open connection is closed; new ones are reset at once
        proxy.cut(blackhole=True)  # ... or accepted and never answered (a host that vanished)
        proxy.restore()          # new connections are forwarded again

Each forwarded connection gets a connection to the target and two threads that copy bytes; ``cut``
closes both sides of every one, so clients see their server drop them mid-conversation. The proxy
runs in daemon threads of the test process; ``close`` (or leaving the ``with``) stops everything.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
from types import TracebackType


class TcpProxy:
    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.host = "127.0.0.1"
        self.port: int = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()  # both ends of every forwarded connection
        self._held: set[socket.socket] = set()  # blackholed connections, closed on restore
        self._mode = "forward"  # or "reset", "blackhole"
        self._closed = False
        self.accepted = 0
        self._thread = threading.Thread(target=self._accept, name=f"proxy-{self.port}", daemon=True)
        self._thread.start()

    def __enter__(self) -> TcpProxy:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    @property
    def connections(self) -> int:
        """Forwarded connections open now."""
        with self._lock:
            return len(self._open) // 2

    def cut(self, *, blackhole: bool = False) -> None:
        """Close every open connection; new ones are reset at once or, with ``blackhole``, held unanswered."""
        with self._lock:
            self._mode = "blackhole" if blackhole else "reset"
            doomed = list(self._open)
            self._open.clear()
        for sock in doomed:
            _close(sock)

    def restore(self) -> None:
        """Forward new connections again (the blackholed ones are closed: their clients retry)."""
        with self._lock:
            self._mode = "forward"
            held = list(self._held)
            self._held.clear()
        for sock in held:
            _close(sock)

    def close(self) -> None:
        self._closed = True
        _close(self._listener)  # shutdown wakes the accepting thread
        self._thread.join(5)
        self.cut()
        self.restore()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            self.accepted += 1
            with self._lock:
                mode = self._mode
                if mode == "blackhole":
                    self._held.add(client)
                    continue
            if mode == "reset":
                _reset(client)
                continue
            threading.Thread(target=self._connect, args=(client,), daemon=True).start()

    def _connect(self, client: socket.socket) -> None:
        try:
            upstream = socket.create_connection(self.target, timeout=5)
        except OSError:
            _reset(client)
            return
        upstream.settimeout(None)
        with self._lock:
            if self._mode != "forward":  # cut while connecting
                _reset(client)
                _close(upstream)
                return
            self._open.update((client, upstream))
        for source, sink in ((client, upstream), (upstream, client)):
            threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        with self._lock:
            self._open.discard(source)
            self._open.discard(sink)
        _close(source)
        _close(sink)


def _reset(sock: socket.socket) -> None:
    """Close with a TCP reset, as a server that is not there would answer."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(OSError):
        sock.close()


def _close(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        sock.close()

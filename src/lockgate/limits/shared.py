"""Counters shared by the workers of one ``lockgate serve --workers N``.

Each worker is a process of its own, so ``MemoryCounters`` in a worker would count only that worker's
calls and every limit would be N times too loose. Instead the supervisor holds the one
``MemoryCounters`` and serves it on a Unix domain socket (``CountersServer``, a thread with its own event
loop, started before the workers); each worker talks to it through ``SocketCounters``, which implements
the same contract. The server runs each operation synchronously on its loop, so admission stays atomic
across workers exactly as it is within one process.

The socket lives in a fresh private directory (0700; the socket itself 0600) whose path reaches the
workers in ``LOCKGATE_COUNTERS_SOCKET``. ``process_counters()`` is what a worker calls: the socket
client when that variable is set, in-process counters otherwise (``lockgate serve`` with one worker).

Protocol: frames of a 4-byte big-endian length and a MessagePack body. A request is
``[id, op, args]`` (``op``: ``admit``, ``settle`` or ``set_spend``); the answer is
``[id, error, result]``, ``error`` null on success. A connection carries many requests at once
(pipelined); answers come back in the order the server ran them, matched to requests by ``id``.

A client whose connection drops fails its pending operations and reconnects on the next one; when the
socket is gone (or an answer takes longer than ``timeout``) operations raise ``CountersUnavailable``.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import shutil
import struct
import tempfile
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

import msgspec

from lockgate.limits.counters import (
    Admission,
    Check,
    Counters,
    CountersUnavailable,
    MemoryCounters,
    OverSoftCap,
)

_log = logging.getLogger(__name__)
SOCKET_ENV = "LOCKGATE_COUNTERS_SOCKET"
MAX_FRAME = 16 * 1024 * 1024
_HEADER = struct.Struct(">I")
_MAX_PATH = 100  # sun_path holds 108 bytes on Linux, 104 on macOS


class _Request(msgspec.Struct, array_like=True):
    id: int
    op: str
    args: msgspec.Raw


class _Response(msgspec.Struct, array_like=True):
    id: int
    error: str | None
    result: msgspec.Raw


class _AdmitArgs(msgspec.Struct, array_like=True):
    checks: list[Check]
    reservation: str
    hold: float


class _AdmitResult(msgspec.Struct, array_like=True):
    admitted: bool
    at: float
    refused: int | None
    retry_after: float
    remaining: list[float]
    reset: list[float]


class _SettleArgs(msgspec.Struct, array_like=True):
    reservation: str
    admitted: bool
    at: float
    checks: list[Check]
    used: list[float]


class _SetSpendArgs(msgspec.Struct, array_like=True):
    key: str
    spent: float
    ends_at: float


_encoder = msgspec.msgpack.Encoder()
_requests = msgspec.msgpack.Decoder(_Request)
_responses = msgspec.msgpack.Decoder(_Response)
_admit_args = msgspec.msgpack.Decoder(_AdmitArgs)
_admit_results = msgspec.msgpack.Decoder(_AdmitResult)
_settle_args = msgspec.msgpack.Decoder(_SettleArgs)
_settle_results = msgspec.msgpack.Decoder(list[tuple[int, float]])
_set_spend_args = msgspec.msgpack.Decoder(_SetSpendArgs)
_NIL = msgspec.Raw(_encoder.encode(None))


def _frame(message: object) -> bytes:
    body = _encoder.encode(message)
    return _HEADER.pack(len(body)) + body


async def _read_frame(reader: asyncio.StreamReader) -> bytes:
    (size,) = _HEADER.unpack(await reader.readexactly(_HEADER.size))
    if size > MAX_FRAME:
        raise ConnectionError(f"a frame of {size} bytes is over the limit")
    return await reader.readexactly(size)


class CountersServer:
    """One ``MemoryCounters`` served on a Unix socket by a thread with its own event loop."""

    def __init__(self, path: str | Path, counters: MemoryCounters | None = None) -> None:
        self.path = Path(path)
        if len(os.fsencode(self.path)) > _MAX_PATH:
            raise ValueError(f"the socket path {self.path} is too long for a Unix socket")
        self.counters = counters if counters is not None else MemoryCounters()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._failure: BaseException | None = None
        self._connections: dict[asyncio.StreamWriter, asyncio.Task[None] | None] = {}

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="lockgate-counters", daemon=True)
        self._thread.start()
        self._ready.wait(10)
        if self._failure is not None:
            raise self._failure
        if not self._ready.is_set():
            raise RuntimeError("the counters server did not start")

    def stop(self) -> None:
        loop, stop, thread = self._loop, self._stop, self._thread
        if loop is not None and stop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(stop.set)
        if thread is not None:
            thread.join(10)
        self._thread = None

    def _run(self) -> None:
        try:  # the loop the workers run on (uvicorn's), when installed
            import uvloop

            loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
        except ImportError:
            loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._main())
        except BaseException as exc:
            if self._ready.is_set():  # it was serving: the workers' calls now fail as unavailable
                _log.exception("the shared counters server stopped")
            self._failure = exc  # before it served: start() raises it
        finally:
            self._ready.set()
            loop.close()

    async def _main(self) -> None:
        self._stop = asyncio.Event()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        server = await asyncio.start_unix_server(self._serve, path=str(self.path))
        try:
            os.chmod(self.path, 0o600)
            self._ready.set()
            await self._stop.wait()
        finally:
            server.close()
            for writer in self._connections:
                writer.close()
            handlers = [task for task in self._connections.values() if task is not None]
            if handlers:  # each ends on its closed connection
                await asyncio.wait(handlers, timeout=5)
            await server.wait_closed()
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._connections[writer] = asyncio.current_task()
        try:
            while True:
                request = _requests.decode(await _read_frame(reader))
                writer.write(_frame(self._answer(request)))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, msgspec.DecodeError):
            pass
        finally:
            self._connections.pop(writer, None)
            writer.close()

    def _answer(self, request: _Request) -> _Response:
        counters = self.counters
        result: object
        try:
            if request.op == "admit":
                a = _admit_args.decode(request.args)
                admission = counters.admit_now(a.checks, a.reservation, a.hold)
                result = _AdmitResult(
                    admission.admitted,
                    admission.at,
                    admission.refused,
                    admission.retry_after,
                    list(admission.remaining),
                    list(admission.reset),
                )
            elif request.op == "settle":
                s = _settle_args.decode(request.args)
                admission = Admission(s.reservation, s.admitted, tuple(s.checks), s.at)
                over = counters.settle_now(admission, s.used)
                index = {id(check): i for i, check in enumerate(admission.checks)}
                result = [(index[id(o.check)], o.spent) for o in over]
            elif request.op == "set_spend":
                p = _set_spend_args.decode(request.args)
                counters.set_spend_now(p.key, p.spent, p.ends_at)
                result = None
            else:
                return _Response(request.id, f"unknown operation {request.op!r}", _NIL)
        except Exception as exc:  # a malformed request: answered, the connection and the server go on
            return _Response(request.id, f"{type(exc).__name__}: {exc}", _NIL)
        return _Response(request.id, None, msgspec.Raw(_encoder.encode(result)))


class _Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writer = writer
        self.pending: dict[int, asyncio.Future[_Response]] = {}
        self.closed = False
        self.task = asyncio.get_running_loop().create_task(self._read(reader))

    async def _read(self, reader: asyncio.StreamReader) -> None:
        try:
            while True:
                response = _responses.decode(await _read_frame(reader))
                future = self.pending.pop(response.id, None)
                if future is not None and not future.done():
                    future.set_result(response)
        except (asyncio.IncompleteReadError, ConnectionError, OSError, msgspec.DecodeError):
            pass
        finally:
            self.close()

    def close(self) -> None:
        self.closed = True
        for future in self.pending.values():
            if not future.done():
                future.set_exception(CountersUnavailable("the connection to the counters server was lost"))
        self.pending.clear()
        self.writer.close()


class SocketCounters:
    """The worker's side: the ``Counters`` contract over one persistent connection to the supervisor."""

    def __init__(self, path: str | Path, timeout: float = 1.0) -> None:
        self.path = str(path)
        self._timeout = timeout
        self._ids = itertools.count(1)
        self._connection: _Connection | None = None
        self._connecting: asyncio.Lock | None = None

    async def _connect(self) -> _Connection:
        connection = self._connection
        if connection is not None and not connection.closed:
            return connection
        if self._connecting is None:
            self._connecting = asyncio.Lock()
        async with self._connecting:
            if self._connection is None or self._connection.closed:
                reader, writer = await asyncio.open_unix_connection(self.path)
                self._connection = _Connection(reader, writer)
            return self._connection

    async def _call(self, op: str, args: object) -> msgspec.Raw:
        request_id = next(self._ids)
        connection: _Connection | None = None
        try:
            async with asyncio.timeout(self._timeout):
                connection = await self._connect()
                future: asyncio.Future[_Response] = asyncio.get_running_loop().create_future()
                connection.pending[request_id] = future
                connection.writer.write(_frame(_Request(request_id, op, msgspec.Raw(_encoder.encode(args)))))
                await connection.writer.drain()
                response = await future
        except (OSError, TimeoutError) as exc:
            raise CountersUnavailable(
                f"the counters server at {self.path} did not answer: {type(exc).__name__}"
            ) from exc
        finally:
            if connection is not None:
                connection.pending.pop(request_id, None)
        if response.error is not None:
            raise CountersUnavailable(f"the counters server refused {op}: {response.error}")
        return response.result

    async def admit(self, checks: Sequence[Check], reservation: str, hold: float) -> Admission:
        checks = tuple(checks)
        raw = await self._call("admit", _AdmitArgs(list(checks), reservation, hold))
        result = _admit_results.decode(raw)
        return Admission(
            reservation,
            result.admitted,
            checks,
            result.at,
            refused=result.refused,
            retry_after=result.retry_after,
            remaining=tuple(result.remaining),
            reset=tuple(result.reset),
        )

    async def settle(self, admission: Admission, used: Sequence[float]) -> list[OverSoftCap]:
        if not admission.admitted:
            return []
        args = _SettleArgs(
            admission.reservation, admission.admitted, admission.at, list(admission.checks), list(used)
        )
        over = _settle_results.decode(await self._call("settle", args))
        return [OverSoftCap(admission.checks[index], spent) for index, spent in over]

    async def set_spend(self, key: str, spent: float, ends_at: float) -> None:
        await self._call("set_spend", _SetSpendArgs(key, spent, ends_at))

    async def reconciled(self) -> None:
        return None  # the supervisor's memory lives as long as its workers

    async def close(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            connection.close()
            connection.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await connection.task
            with contextlib.suppress(OSError):
                await connection.writer.wait_closed()


@contextlib.contextmanager
def serve_counters() -> Iterator[str]:
    """For the supervisor: serve shared counters for the duration, their socket path in the environment."""
    directory = tempfile.mkdtemp(prefix="lockgate-counters-")
    server = CountersServer(Path(directory) / "counters.sock")
    try:
        server.start()
        os.environ[SOCKET_ENV] = str(server.path)
        yield str(server.path)
    finally:
        os.environ.pop(SOCKET_ENV, None)
        server.stop()
        shutil.rmtree(directory, ignore_errors=True)


def process_counters() -> Counters:
    """A worker's in-process counters: the supervisor's shared ones when it serves them, else its own."""
    path = os.environ.get(SOCKET_ENV)
    return SocketCounters(path) if path else MemoryCounters()

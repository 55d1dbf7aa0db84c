"""Child processes of a benchmark: each in its own session, every one stopped on the way out.

Children run in a session of their own so that Ctrl-C reaches only the benchmark, which then stops them
in order (the gateway first, with SIGTERM, so its request log writer flushes). ``Children`` is a context
manager: leaving it, normally or through an exception, stops whatever is still running.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
from collections.abc import Sequence
from pathlib import Path
from types import FrameType, TracebackType


class Children:
    def __init__(self) -> None:
        self._running: list[subprocess.Popen[bytes]] = []

    def __enter__(self) -> Children:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop_all()

    def spawn(
        self, args: Sequence[str], *, output: Path, cwd: Path | None = None, stderr_too: bool = True
    ) -> subprocess.Popen[bytes]:
        """Start ``args`` with its stdout (and stderr) written to ``output``."""
        with output.open("wb") as sink:
            proc = subprocess.Popen(
                list(args),
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=sink,
                stderr=subprocess.STDOUT if stderr_too else subprocess.DEVNULL,
                start_new_session=True,
            )
        self._running.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen[bytes], *, grace: float = 10.0) -> int:
        """SIGTERM, wait up to ``grace`` seconds, then SIGKILL the child's whole process group."""
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(grace)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        self.forget(proc)
        return proc.returncode

    def forget(self, proc: subprocess.Popen[bytes]) -> None:
        if proc in self._running:
            self._running.remove(proc)

    def stop_all(self) -> None:
        for proc in reversed(list(self._running)):
            self.stop(proc, grace=5.0)


def exit_on_sigterm() -> None:
    """Turn SIGTERM and SIGHUP into SystemExit and SIGINT into KeyboardInterrupt, so cleanup runs.

    SIGINT is set explicitly: a shell that starts the benchmark in the background ignores it otherwise.
    """

    def handler(signum: int, _frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGHUP, handler)
    signal.signal(signal.SIGINT, signal.default_int_handler)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def tail(path: Path, lines: int = 20) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return "(no output)"
    return "\n".join(text.splitlines()[-lines:])

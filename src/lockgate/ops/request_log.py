"""The request log writer: records are queued on the request path and written in batches.

``submit`` appends to a bounded in-memory queue without waking anyone. A dedicated thread sleeps for
``flush_interval``, then drains the queue in transactions of up to ``batch_size`` rows, so the event loop
never waits on the database and the writer wakes a few times a second rather than once per request (it
is woken early only when a full batch is waiting). ``close`` drains everything still queued, which is
what makes a graceful shutdown lose nothing. Prompt and completion text are written only when content
storage is enabled, with an expiry that the same thread enforces.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine, delete
from sqlalchemy.exc import DataError, IntegrityError

from lockgate.config.schema import RequestLogConfig
from lockgate.ops.records import RequestRecord
from lockgate.store.tables import request_content, request_log

log = logging.getLogger(__name__)

_PURGE_EVERY = 60.0


class RequestLog:
    def __init__(
        self,
        engine: Engine,
        config: RequestLogConfig,
        *,
        on_written: Callable[[int], None] | None = None,
        on_dropped: Callable[[int], None] | None = None,
    ) -> None:
        self._engine = engine
        self._config = config
        self._pending: deque[RequestRecord] = deque()
        self._wake = threading.Event()
        self._stopping = False
        self._on_written = on_written
        self._on_dropped = on_dropped
        self._thread = threading.Thread(target=self._run, name="request-log", daemon=True)
        self._last_purge = 0.0
        self.written = 0
        self.dropped = 0

    @property
    def stores_content(self) -> bool:
        return self._config.store_content

    def start(self) -> None:
        self._thread.start()

    def submit(self, record: RequestRecord) -> None:
        pending = self._pending
        if len(pending) >= self._config.queue_size:
            self._count(dropped=1)
            return
        pending.append(record)  # deque.append is atomic: no lock, no wake-up
        if len(pending) == self._config.batch_size:
            self._wake.set()

    def close(self, timeout: float = 30.0) -> None:
        """Write everything queued so far, then stop the writer thread."""
        if not self._thread.is_alive():
            return
        self._stopping = True
        self._wake.set()
        self._thread.join(timeout)

    def depth(self) -> int:
        return len(self._pending)

    def _run(self) -> None:
        while True:
            self._wake.wait(self._config.flush_interval)
            self._wake.clear()
            stopping = self._stopping  # read before draining: records submitted until now get written
            pending = self._pending
            while pending:
                size = min(len(pending), self._config.batch_size)
                self._write([pending.popleft() for _ in range(size)])
            self._purge_expired()
            if stopping:
                return

    def _write(self, batch: list[RequestRecord]) -> None:
        for attempt in range(3):
            try:
                self._insert(batch)
            except (IntegrityError, DataError):
                log.warning("the store refused %d request record(s)", len(batch), exc_info=True)
                break  # retrying will not help; with several rows, find the bad one below
            except Exception:
                log.warning("request log write failed (attempt %d of 3)", attempt + 1, exc_info=True)
                time.sleep(0.5 * (attempt + 1))
            else:
                self._count(written=len(batch))
                return
        if len(batch) == 1:
            self._count(dropped=1)
            return
        # One record the store refuses must not take the rest of its batch with it.
        for record in batch:
            self._write([record])

    def _insert(self, batch: list[RequestRecord]) -> None:
        with self._engine.begin() as connection:
            connection.execute(request_log.insert(), [r.row() for r in batch])
            contents = self._content_rows(batch)
            if contents:
                connection.execute(request_content.insert(), contents)

    def _count(self, *, written: int = 0, dropped: int = 0) -> None:
        self.written += written
        self.dropped += dropped
        if written and self._on_written is not None:
            self._on_written(written)
        if dropped and self._on_dropped is not None:
            self._on_dropped(dropped)

    def _content_rows(self, batch: list[RequestRecord]) -> list[dict[str, object]]:
        if not self._config.store_content:
            return []
        expires = datetime.now(UTC) + timedelta(days=self._config.content_retention_days)
        return [
            {
                "request_id": r.id,
                "request_body": r.request_body.decode("utf-8", "replace"),
                "response_body": r.response_body,
                "expires_at": expires,
            }
            for r in batch
            if r.request_body is not None
        ]

    def _purge_expired(self) -> None:
        now = time.monotonic()
        if not self._config.store_content or now - self._last_purge < _PURGE_EVERY:
            return
        self._last_purge = now
        try:
            with self._engine.begin() as connection:
                connection.execute(
                    delete(request_content).where(request_content.c.expires_at <= datetime.now(UTC))
                )
        except Exception:
            log.warning("purging expired request content failed", exc_info=True)

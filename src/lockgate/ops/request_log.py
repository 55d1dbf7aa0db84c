"""The request log writer: records are queued on the request path and written in batches.

``submit`` appends to a bounded in-memory buffer without waking anyone. A dedicated thread sleeps for
``flush_interval``, then writes the buffer in transactions of up to ``batch_size`` rows, so the event
loop never waits on the database and the writer wakes a few times a second rather than once per request
(it is woken early only when a full batch is waiting). ``close`` writes everything buffered, which is
what makes a graceful shutdown lose nothing. Prompt and completion text are written only when content
storage is enabled, with an expiry that the same thread enforces.

A record leaves the buffer only once it is written (or refused), so the store may go away at any time:

- **The store is unreachable** (connection refused or lost, a timeout, SQLite locked): the batch stays
  at the head of the buffer and the writer retries it after a pause that doubles from 0.5 s to 5 s.
  Requests are still served from memory and their records wait behind it, in order. One warning when
  the outage starts, one when it ends.
- **The store refuses rows** (a constraint or a value it cannot hold): the batch is halved until the
  record it refuses is found; only that record is dropped (``reason="refused"``), the rest are written.
- **The buffer is full** (``queue_size`` records wait, about 0.7 KB each plus any stored prompt and
  completion text): new records are dropped (``reason="overflow"``) until the writer catches up. The
  gateway keeps answering; it never waits for the log.
- **Shutdown with the store unreachable**: ``close`` keeps retrying until its timeout, then drops what
  is left (``reason="shutdown"``) and logs how many.

Inserts skip ids already in the table, so retrying a batch whose commit succeeded but whose answer was
lost writes each record once and drops none.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Engine, Table, delete
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError, StatementError

from lockgate.config.schema import RequestLogConfig
from lockgate.ops.records import RequestRecord
from lockgate.store.outage import Outage, describe
from lockgate.store.tables import request_content, request_log

log = logging.getLogger(__name__)

_PURGE_EVERY = 60.0
BACKOFF_FIRST = 0.5
BACKOFF_MAX = 5.0

OVERFLOW = "overflow"
REFUSED = "refused"
SHUTDOWN = "shutdown"
DROP_REASONS = (OVERFLOW, REFUSED, SHUTDOWN)


class RequestLog:
    def __init__(
        self,
        engine: Engine,
        config: RequestLogConfig,
        *,
        on_written: Callable[[int], None] | None = None,
        on_dropped: Callable[[str, int], None] | None = None,
        on_pending: Callable[[int], None] | None = None,
    ) -> None:
        self._engine = engine
        self._config = config
        # Only the writer thread removes records, from the left and only once they are written; the event
        # loop only appends on the right. deque makes both atomic, so neither side takes a lock.
        self._pending: deque[RequestRecord] = deque()
        self._wake = threading.Event()
        self._closing = threading.Event()
        self._deadline = math.inf
        self._on_written = on_written
        self._on_dropped = on_dropped
        self._on_pending = on_pending
        self._thread = threading.Thread(target=self._run, name="request-log", daemon=True)
        self._last_purge = 0.0
        self._outage = Outage(log, "the store (request log)")
        self._overflowing = False
        self._insert_log = _insert_ignoring_duplicates(engine, request_log)
        self._insert_content = _insert_ignoring_duplicates(engine, request_content)
        self.written = 0
        self.overflowed = 0  # counted on the event loop's thread
        self.refused = 0  # counted on the writer's thread, like the two below
        self.unwritten_at_shutdown = 0

    @property
    def dropped(self) -> int:
        return self.overflowed + self.refused + self.unwritten_at_shutdown

    @property
    def stores_content(self) -> bool:
        return self._config.store_content

    @property
    def store_reachable(self) -> bool:
        """False while the writer's last attempt found the store unreachable."""
        return not self._outage.down

    def start(self) -> None:
        self._thread.start()

    def submit(self, record: RequestRecord) -> None:
        pending = self._pending
        if len(pending) >= self._config.queue_size:
            self._overflow()
            return
        pending.append(record)  # deque.append is atomic: no lock, no wake-up
        if len(pending) == self._config.batch_size:
            self._wake.set()

    def close(self, timeout: float = 30.0) -> None:
        """Write everything buffered so far, then stop the writer thread. With the store unreachable,
        keep trying for ``timeout`` seconds, then drop what is left (counted, logged)."""
        if not self._thread.is_alive():
            return
        self._deadline = time.monotonic() + timeout
        self._closing.set()
        self._wake.set()
        # One attempt in progress at the deadline may still take up to the store's connect timeout.
        self._thread.join(timeout + 15)

    def depth(self) -> int:
        """Records waiting to be written."""
        return len(self._pending)

    def _run(self) -> None:
        backoff = 0.0
        while True:
            if not backoff:
                self._wake.wait(self._config.flush_interval)
            elif self._closing.is_set():
                time.sleep(max(0.0, min(backoff, self._deadline - time.monotonic())))
            else:
                self._closing.wait(backoff)  # an unreachable store is retried at its own pace
            self._wake.clear()
            closing = self._closing.is_set()  # read before writing: records submitted until now get written
            reachable = self._drain()
            if self._on_pending is not None:
                self._on_pending(len(self._pending))
            if reachable:
                backoff = 0.0
                self._purge_expired()
                if closing:
                    return
                continue
            backoff = min(max(backoff * 2, BACKOFF_FIRST), BACKOFF_MAX)
            if closing and time.monotonic() >= self._deadline:
                self._give_up()
                return

    def _drain(self) -> bool:
        """Write the buffer from its head in batches; False (nothing lost) when the store is unreachable."""
        pending = self._pending
        size = self._config.batch_size
        while pending:
            n = min(len(pending), size)
            batch = [pending[i] for i in range(n)]  # peek: records leave the buffer only once written
            try:
                self._insert(batch)
            except Exception as exc:
                if not _refused(exc):
                    self._outage.failed(
                        exc,
                        f"{len(pending)} request records wait in memory (at most "
                        f"{self._config.queue_size}) and are written when it answers; retrying every "
                        f"{BACKOFF_FIRST:g} to {BACKOFF_MAX:g} s",
                    )
                    return False
                self._outage.recovered()
                if n > 1:
                    size = max(1, n // 2)  # narrow down to the record the store refuses
                    continue
                pending.popleft()
                size = self._config.batch_size
                log.warning("the store refused request record %s (%s); dropped", batch[0].id, describe(exc))
                self.refused += 1
                self._dropped(REFUSED, 1)
                continue
            self._outage.recovered()
            for _ in range(n):
                pending.popleft()
            self.written += n
            if self._on_written is not None:
                self._on_written(n)
        if self._overflowing and len(pending) < self._config.queue_size:
            self._overflowing = False
            log.warning("request log buffer has room again (%d records dropped so far)", self.overflowed)
        return True

    def _insert(self, batch: list[RequestRecord]) -> None:
        with self._engine.begin() as connection:
            connection.execute(self._insert_log, [r.row() for r in batch])
            contents = self._content_rows(batch)
            if contents:
                connection.execute(self._insert_content, contents)

    def _overflow(self) -> None:
        self.overflowed += 1
        self._dropped(OVERFLOW, 1)
        if not self._overflowing:
            self._overflowing = True
            log.warning(
                "request log buffer full (%d records waiting, request_log.queue_size): dropping new "
                "records until the store catches up",
                self._config.queue_size,
            )

    def _give_up(self) -> None:
        lost = len(self._pending)
        self._pending.clear()
        self.unwritten_at_shutdown += lost
        self._dropped(SHUTDOWN, lost)
        if self._on_pending is not None:
            self._on_pending(0)
        log.error("shutting down with the store unreachable: %d request records were not written", lost)

    def _dropped(self, reason: str, count: int) -> None:
        if count and self._on_dropped is not None:
            self._on_dropped(reason, count)

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
        except Exception as exc:
            log.warning("purging expired request content failed (%s)", describe(exc))


def _refused(error: BaseException) -> bool:
    """The store (or the driver, before sending) refuses these rows: retrying them cannot help."""
    if isinstance(error, (IntegrityError, DataError)):
        return True
    return isinstance(error, StatementError) and not isinstance(error, DBAPIError)


def _insert_ignoring_duplicates(engine: Engine, table: Table) -> Any:
    """INSERT ... ON CONFLICT DO NOTHING: a retried batch whose first commit went through is a no-op."""
    if engine.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as postgresql_insert

        return postgresql_insert(table).on_conflict_do_nothing()
    if engine.dialect.name == "sqlite":
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        return sqlite_insert(table).on_conflict_do_nothing()
    return table.insert()

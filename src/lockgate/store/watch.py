"""Follow the store's change versions and reload in-memory state when one moves.

Gateway workers keep keys, tenants and route pointers in memory. One task per worker polls the
``state_versions`` table (a single small query, off the request path) and reloads whatever changed,
so a change made by any process reaches every worker within one polling interval plus a reload. A
change made through this process's own control API ``wake``s the watcher, so it applies at once here,
and, with Redis configured, ``announce``s it (``store/notices.py``) so that every other worker polls at
once too; polling stays, as the fallback when a notice is lost or Redis is down. An unreachable store
is logged once per outage; the in-memory state keeps serving meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import Engine, select

from lockgate.store.database import store_unreachable
from lockgate.store.notices import ChangeNotices
from lockgate.store.outage import Outage
from lockgate.store.tables import state_versions

log = logging.getLogger(__name__)


@dataclass(slots=True)
class _Watched:
    name: str
    loaded: Callable[[], int]
    reload: Callable[[Engine], None]


class ChangeWatcher:
    def __init__(self, engine: Engine, interval: float = 0.25, notices: ChangeNotices | None = None) -> None:
        self._engine = engine
        self._interval = interval
        self._watched: list[_Watched] = []
        self._woken: asyncio.Event | None = None
        self._outage = Outage(log, "the store (change watcher)")
        self._failing = False  # an error other than an unreachable store: logged once in a row
        self.notices = notices
        self.last_ok = 0.0

    def wake(self) -> None:
        """Poll now instead of at the next interval (call from the watcher's event loop)."""
        if self._woken is not None:
            self._woken.set()

    def announce(self) -> None:
        """This process committed a change: have every other worker poll now (with Redis configured)."""
        if self.notices is not None:
            self.notices.publish()

    def watch(self, name: str, loaded: Callable[[], int], reload: Callable[[Engine], None]) -> None:
        """``loaded`` returns the version the in-memory copy reflects; ``reload`` rebuilds it."""
        self._watched.append(_Watched(name, loaded, reload))

    def _versions(self) -> dict[str, int]:
        with self._engine.connect() as connection:
            return {row.name: int(row.version) for row in connection.execute(select(state_versions))}

    async def poll_once(self) -> None:
        current = await asyncio.to_thread(self._versions)
        for watched in self._watched:
            if current.get(watched.name, 0) != watched.loaded():
                await asyncio.to_thread(watched.reload, self._engine)
        self.last_ok = time.monotonic()

    async def run(self) -> None:
        self._woken = asyncio.Event()
        listener = None
        if self.notices is not None:
            listener = asyncio.create_task(self.notices.listen(self.wake), name="change-notices")
        try:
            while True:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._woken.wait(), self._interval)
                self._woken.clear()
                try:
                    await self.poll_once()
                except Exception as exc:
                    # The store may be unreachable for a while; keep serving what we have.
                    if store_unreachable(exc):
                        self._outage.failed(exc, "serving the keys and routes in memory; retrying")
                    elif not self._failing:
                        log.warning("change watcher poll failed; retrying", exc_info=True)
                    self._failing = True
                else:
                    self._outage.recovered()
                    self._failing = False
        finally:
            if listener is not None:
                listener.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await listener
            if self.notices is not None:
                await self.notices.close()

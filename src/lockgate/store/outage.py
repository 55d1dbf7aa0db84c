"""Log a dependency that went away once, and once more when it is back, not on every failed attempt.

Background loops (the request log writer, the change watcher, the eval worker, the rollout controller,
change notices) retry an unreachable store or Redis every tick; a traceback per tick would bury the one
line an operator needs. ``Outage.failed`` warns on the first failure of an outage and logs the rest at
debug level; ``Outage.recovered`` says how long it lasted. Messages carry the error's type and its
driver message, never the statement or its parameters (which may hold prompts).
"""

from __future__ import annotations

import logging
import time


class Outage:
    def __init__(self, logger: logging.Logger, what: str) -> None:
        self._log = logger
        self._what = what
        self._since: float | None = None
        self.failures = 0

    @property
    def down(self) -> bool:
        return self._since is not None

    def failed(self, error: BaseException, consequence: str = "retrying") -> bool:
        """Note a failed attempt; True (and a warning) only for the first one of an outage."""
        self.failures += 1
        if self._since is None:
            self._since = time.monotonic()
            self._log.warning("%s unreachable (%s); %s", self._what, describe(error), consequence)
            return True
        self._log.debug("%s still unreachable (%s)", self._what, describe(error))
        return False

    def recovered(self) -> float | None:
        """Note a successful attempt; after an outage, log its length and return it in seconds."""
        if self._since is None:
            return None
        lasted = time.monotonic() - self._since
        self._since = None
        self._log.warning(
            "%s reachable again after %.1f s (%d failed attempts)", self._what, lasted, self.failures
        )
        self.failures = 0
        return lasted


def describe(error: BaseException) -> str:
    """``Type: first line of the driver's message``: SQLAlchemy's own text would add the statement and
    its parameters."""
    original = getattr(error, "orig", None)
    message = str(original if original is not None else error).strip().splitlines()
    first = message[0][:200] if message else ""
    return f"{type(error).__name__}: {first}" if first else type(error).__name__

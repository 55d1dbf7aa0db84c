"""Verification of the tamper-evident audit log, and the anchor file that outlives a rewritten database.

``verify`` walks the entries in sequence order (streaming) and reports the first bad one: a changed
field, a deleted, inserted or reordered entry, an entry re-hashed after an edit (it no longer matches the
head signed for it, or its successor no longer links to it), entries cut off the end or appended without
a signed head. An attacker who can write to the database can delete both tail entries and their head
rows; the anchor file, ``<data_dir>/audit-anchor.json``, keeps the newest signed head outside the
database, so that truncation shows too. ``install_anchor_hook`` keeps the anchor current after every
commit that signs a head.
"""

from __future__ import annotations

import logging
import os
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import orjson
from sqlalchemy import Connection, Engine, Row, and_, event, select
from sqlalchemy.sql import Insert

from lockgate.security.audit import GENESIS, entry_hash, head_message
from lockgate.security.signing import verify_signature
from lockgate.store.tables import audit_heads, audit_log

ANCHOR_FILE = "audit-anchor.json"
Kind = Literal[
    "edited", "missing", "reordered", "truncated", "unsigned_append", "bad_signature", "bad_anchor"
]

_PENDING = "lockgate.audit.anchor_pending"
_BATCH = 1000
_anchor_lock = threading.Lock()
_log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Anchor:
    seq: int
    hash: str
    signature: str


@dataclass(frozen=True, slots=True)
class VerifyReport:
    ok: bool
    entries: int
    first_bad_seq: int | None
    problem: str | None
    head_seq: int | None
    kind: Kind | None = None
    anchor_seq: int | None = None


@dataclass(frozen=True, slots=True)
class _Problem:
    seq: int | None
    kind: Kind
    text: str


class AnchorError(ValueError):
    """The anchor file exists but cannot be read as an anchor."""


def anchor_path(data: Path) -> Path:
    return data / ANCHOR_FILE


def read_anchor(path: Path) -> Anchor | None:
    try:
        raw = orjson.loads(path.read_bytes())
        return Anchor(int(raw["seq"]), str(raw["hash"]), str(raw["signature"]))
    except FileNotFoundError:
        return None
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise AnchorError(f"{path} is not an audit anchor: {exc}") from None


def write_anchor(path: Path, seq: int, hash_: str, signature: str) -> None:
    """Record a signed head in ``path`` (temp file + rename), unless it already holds a newer one."""
    with _anchor_lock:
        try:
            current = read_anchor(path)
        except AnchorError:
            current = None
        # Commits of concurrent appends can finish out of order; the anchor must never move back.
        if current is not None and current.seq >= seq:
            return
        body = orjson.dumps({"seq": seq, "hash": hash_, "signature": signature})
        fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(body)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temp, path)
        except BaseException:
            Path(temp).unlink(missing_ok=True)
            raise


def install_anchor_hook(engine: Engine, path: Path) -> None:
    """Write the anchor after each commit of ``engine`` that inserted a signed head (once per engine).

    ``AuditLog.append`` runs inside the caller's transaction, which may still roll back; only code
    that runs after the DBAPI commit returns may move the anchor, hence the wrapped ``do_commit``.
    """
    dialect = engine.dialect
    if getattr(dialect, "_lockgate_anchor", None) is not None:
        return
    commit: Callable[[Any], None] = dialect.do_commit
    rollback: Callable[[Any], None] = dialect.do_rollback

    def do_commit(dbapi_connection: Any) -> None:
        commit(dbapi_connection)
        pending = _info(dbapi_connection).pop(_PENDING, None)
        if pending is not None:
            try:
                write_anchor(path, *pending)
            except OSError:
                # The change is committed; failing it now would lie to the caller. A stale anchor is safe.
                _log.exception("could not update the audit anchor %s", path)

    def do_rollback(dbapi_connection: Any) -> None:
        _info(dbapi_connection).pop(_PENDING, None)
        rollback(dbapi_connection)

    def capture(connection: Connection, statement: Any, *_: Any) -> None:
        if isinstance(statement, Insert) and statement.table is audit_heads:
            values = statement.compile().params
            head = (int(values["seq"]), str(values["hash"]), str(values["signature"]))
            current = connection.info.get(_PENDING)
            if current is None or current[0] < head[0]:
                connection.info[_PENDING] = head

    def forget(connection: Connection, *_: Any) -> None:
        connection.info.pop(_PENDING, None)

    dialect.do_commit = do_commit  # type: ignore[method-assign]
    dialect.do_rollback = do_rollback  # type: ignore[method-assign]
    dialect._lockgate_anchor = path  # type: ignore[attr-defined]
    event.listen(engine, "after_execute", capture)
    event.listen(engine, "begin", forget)
    event.listen(engine, "rollback_savepoint", forget)


def verify(engine: Engine, public_key: str, anchor: Path | None) -> VerifyReport:
    """Check the whole chain against itself, its signed heads and the anchor file at ``anchor``."""
    late: list[_Problem] = []
    trusted: Anchor | None = None
    # The anchor is read before the snapshot: it only ever names committed heads, so the snapshot holds them.
    try:
        found = read_anchor(anchor) if anchor is not None else None
    except AnchorError as exc:
        found, late = None, [_Problem(None, "bad_anchor", str(exc))]
    if found is not None:
        if verify_signature(public_key, head_message(found.seq, found.hash), found.signature):
            trusted = found
        else:
            late.append(_Problem(found.seq, "bad_anchor", "the anchor file's signature is invalid"))
    with _snapshot(engine) as connection:
        head = connection.execute(
            select(audit_heads).order_by(audit_heads.c.seq.desc(), audit_heads.c.id.desc()).limit(1)
        ).first()
        walk = _Walk(public_key, trusted)
        stopped = walk.run(connection)
    late.extend(walk.late)
    late.extend([stopped] if stopped is not None else _ends(walk, head, public_key, trusted))
    problem = min(late, key=lambda p: p.seq if p.seq is not None else -1, default=None)
    head_seq = int(head.seq) if head is not None else None
    anchor_seq = found.seq if found is not None else None
    if problem is None:
        return VerifyReport(True, walk.count, None, None, head_seq, None, anchor_seq)
    return VerifyReport(False, walk.count, problem.seq, problem.text, head_seq, problem.kind, anchor_seq)


def _ends(walk: _Walk, head: Row[Any] | None, public_key: str, anchor: Anchor | None) -> list[_Problem]:
    last, found = walk.last, []
    if head is None:
        if last > 0:
            found.append(_Problem(1, "unsigned_append", "entry 1 was added but no head was ever signed"))
    elif not verify_signature(public_key, head_message(int(head.seq), str(head.hash)), str(head.signature)):
        found.append(_Problem(int(head.seq), "bad_signature", "the signed head's signature is invalid"))
    elif int(head.seq) > last:
        text = f"chain ends at {last} but the signed head is at {head.seq}: entries were removed from the end"
        found.append(_Problem(last + 1, "truncated", text))
    elif int(head.seq) < last:
        seq = int(head.seq) + 1
        found.append(_Problem(seq, "unsigned_append", f"entry {seq} was added after the last signed head"))
    if anchor is not None and anchor.seq > last:
        text = (
            f"chain ends at {last} but the anchor file records a signed head at {anchor.seq}: "
            "entries were removed from the end"
        )
        found.append(_Problem(last + 1, "truncated", text))
    return found


class _Walk:
    """One pass over the entries, keeping only the last two hashes."""

    def __init__(self, public_key: str, anchor: Anchor | None) -> None:
        self.public_key = public_key
        self.anchor = anchor
        self.count = 0
        self.last = 0
        self.late: list[_Problem] = []  # anchor mismatches: an earlier entry may still turn out bad
        self.hashes = (GENESIS, "")  # of the entries just before the current one and the one before that

    def run(self, connection: Connection) -> _Problem | None:
        other = and_(audit_heads.c.seq == audit_log.c.seq, audit_heads.c.hash != audit_log.c.hash)
        query = (
            select(
                audit_log, audit_heads.c.hash.label("head_hash"), audit_heads.c.signature.label("head_sig")
            )
            .select_from(audit_log.outerjoin(audit_heads, other))
            .order_by(audit_log.c.seq)
        )
        rows = iter(connection.execute(query.execution_options(yield_per=_BATCH)))
        for row in rows:
            problem = self.check(row, rows)
            if problem is not None:
                return problem
            self.hashes = (str(row.hash), self.hashes[0])
            self.count += 1
            self.last = int(row.seq)
        return None

    def check(self, row: Row[Any], rows: Iterator[Row[Any]]) -> _Problem | None:
        seq, expected, prev = int(row.seq), self.last + 1, self.hashes[0]
        if seq < expected:
            return _Problem(seq, "reordered", f"entry {seq} is out of order or inserted")
        if seq > expected:
            text = f"entry {expected} is missing (sequence jumps from {expected - 1} to {seq})"
            return _Problem(expected, "missing", text)
        linked, sound = row.prev_hash == prev, _written_as(row, seq)
        if not sound and (linked or _written_as(row, seq, prev)):
            return _Problem(seq, "edited", f"entry {seq} was edited: its hash does not match its contents")
        if not linked:
            return self.unlinked(row, rows, sound)
        if row.head_hash is not None:
            if not verify_signature(self.public_key, head_message(seq, row.head_hash), row.head_sig):
                return _Problem(
                    seq, "bad_signature", f"the signed head for entry {seq} has an invalid signature"
                )
            return self.replaced(seq, rows, "it does not match the head signed for it")
        if self.anchor is not None and self.anchor.seq == seq and self.anchor.hash != row.hash:
            text = f"entry {seq} was edited and re-hashed: it does not match the anchor file"
            self.late.append(_Problem(seq, "edited", text))
        return None

    def unlinked(self, row: Row[Any], rows: Iterator[Row[Any]], sound: bool) -> _Problem:
        seq, (prev, before_prev) = int(row.seq), self.hashes
        if sound:
            text = (
                f"entry {seq} does not link to entry {seq - 1}: "
                f"entry {seq - 1} was edited and re-hashed, or entry {seq} was replaced"
                if seq > 1
                else "entry 1 does not start the chain: it was replaced"
            )
            return _Problem(seq, "edited", text)
        if seq > 1 and row.prev_hash == before_prev and _written_as(row, seq - 1):
            # Written as seq-1 right after entry seq-2: the entry now at seq-1 was slipped in before it.
            return _Problem(seq - 1, "reordered", f"entry {seq - 1} is out of order or inserted")
        if _written_as(row, seq + 1):
            following = _next(rows, seq)
            if following is None or following.prev_hash != prev or not _written_as(following, seq):
                text = f"entry {seq} is missing (later entries were renumbered to close the gap)"
                return _Problem(seq, "missing", text)
        return _Problem(seq, "reordered", f"entry {seq} is out of order or inserted")

    def replaced(self, seq: int, rows: Iterator[Row[Any]], why: str) -> _Problem:
        following = _next(rows, seq)
        if following is not None and following.prev_hash == self.hashes[0] and _written_as(following, seq):
            return _Problem(seq, "reordered", f"entry {seq} is out of order or inserted")
        return _Problem(seq, "edited", f"entry {seq} was edited and re-hashed: {why}")


def _written_as(row: Row[Any], seq: int, prev_hash: str | None = None) -> bool:
    """Whether ``row``'s stored hash is the one ``AuditLog.append`` computes for it at ``seq``."""
    fields = {
        "seq": seq,
        "at": row.at.isoformat(),
        "actor": row.actor,
        "action": row.action,
        "resource": row.resource,
        "before": row.before,
        "after": row.after,
        "outcome": row.outcome,
        "source": row.source,
        "request_id": row.request_id,
    }
    return entry_hash(row.prev_hash if prev_hash is None else prev_hash, fields) == str(row.hash)


def _next(rows: Iterator[Row[Any]], seq: int) -> Row[Any] | None:
    return next((row for row in rows if int(row.seq) != seq), None)


def _info(dbapi_connection: Any) -> dict[Any, Any]:
    try:
        info = getattr(dbapi_connection, "info", None)
    except NotImplementedError:  # a pool connection detached from its record (e.g. during migrations)
        return {}
    return info if isinstance(info, dict) else {}


@contextmanager
def _snapshot(engine: Engine) -> Iterator[Connection]:
    """A read transaction that sees one state of the log, even while appends go on."""
    with engine.connect() as connection:
        if connection.dialect.name == "postgresql":
            connection.execution_options(isolation_level="REPEATABLE READ")
        with connection.begin():
            if connection.dialect.name == "sqlite":
                # pysqlite opens transactions only for writes; reads would each see a different state.
                connection.exec_driver_sql("BEGIN")
            yield connection

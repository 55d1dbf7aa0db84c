"""The audit chain against an attacker with write access to the database, on SQLite and PostgreSQL.

Every tampering is done with SQL on a connection of its own, as such an attacker would; the attacker
knows the hashing scheme (it is in the source) but not the instance's signing key.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from click.testing import CliRunner, Result
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

import lockgate.security.audit as audit_module
from lockgate.cli.audit import audit
from lockgate.service_errors import Forbidden
from lockgate.instance import Instance
from lockgate.security.audit import AuditEvent, entry_hash, head_message
from lockgate.security.audit_verify import (
    AnchorError,
    VerifyReport,
    anchor_path,
    install_anchor_hook,
    read_anchor,
    verify,
    write_anchor,
)
from lockgate.security.rbac import Actor, Role
from lockgate.security.signing import Signer, load_signer
from lockgate.store.tables import audit_heads, audit_log

N = 25
ALICE = Actor(name="alice", source="10.0.0.7", request_id="req-alice")
FIELDS = ("seq", "at", "actor", "action", "resource", "before", "after", "outcome", "source", "request_id")


def event(n: int) -> AuditEvent:
    before = {"status": "draft", "n": n - 1} if n % 2 else None
    return AuditEvent(
        "model.status" if n % 3 else "user.grant", f"thing:{n}", before, {"n": n, "note": "café ✓"}
    )


@pytest.fixture
def anchor(instance: Instance) -> Path:
    path = anchor_path(instance.data)
    install_anchor_hook(instance.engine, path)
    return path


@pytest.fixture
def chain(instance: Instance, anchor: Path) -> Instance:
    """25 entries, appended in transactions of their own and inside callers' transactions."""
    log = instance.audit
    for n in range(1, N + 1):
        if n % 4 == 0:
            log.record(instance.engine, Actor(name="bob"), event(n))
        else:
            with instance.engine.begin() as connection:
                log.append(connection, ALICE, event(n))
    return instance


@pytest.fixture
def attacker(instance: Instance) -> Iterator[sa.Engine]:
    engine = sa.create_engine(instance.url)
    yield engine
    engine.dispose()


def check(instance: Instance, *, anchored: bool = True) -> VerifyReport:
    key = load_signer(instance.data).public_key
    return verify(instance.engine, key, anchor_path(instance.data) if anchored else None)


def assert_bad(report: VerifyReport, seq: int | None, kind: str, problem: str | None = None) -> None:
    assert (report.ok, report.first_bad_seq, report.kind) == (False, seq, kind), report
    if problem is not None:
        assert report.problem == problem


def sql(engine: sa.Engine, *statements: str) -> None:
    with engine.begin() as connection:
        for statement in statements:
            connection.execute(sa.text(statement))


def row(engine: sa.Engine, seq: int) -> dict[str, Any]:
    with engine.connect() as connection:
        return dict(connection.execute(sa.select(audit_log).where(audit_log.c.seq == seq)).one()._mapping)


def forged_hash(values: dict[str, Any]) -> str:
    return entry_hash(values["prev_hash"], {**{k: values[k] for k in FIELDS}, "at": values["at"].isoformat()})


def rehash(engine: sa.Engine, seq: int, **changes: Any) -> None:
    """Change entry ``seq`` and give it the hash its new contents and stored prev_hash call for."""
    values = {**row(engine, seq), **changes}
    with engine.begin() as connection:
        update = sa.update(audit_log).where(audit_log.c.seq == seq)
        connection.execute(update.values(**changes, hash=forged_hash(values)))


def forge(engine: sa.Engine, seq: int, prev_hash: str) -> None:
    """Insert a well-formed entry at ``seq`` that links to ``prev_hash``."""
    values = {
        **row(engine, 3),
        "seq": seq,
        "actor": "mallory",
        "resource": "user:mallory",
        "prev_hash": prev_hash,
    }
    with engine.begin() as connection:
        connection.execute(audit_log.insert().values(**{**values, "hash": forged_hash(values)}))


def shift_up(engine: sa.Engine, table: str, start: int) -> None:
    # Through negative numbers: PostgreSQL checks the primary key row by row.
    sql(
        engine,
        f"UPDATE {table} SET seq = -(seq + 1) WHERE seq >= {start}",
        f"UPDATE {table} SET seq = -seq WHERE seq < 0",
    )


def test_clean_chain_verifies(chain: Instance, anchor: Path) -> None:
    report = check(chain)
    assert report == VerifyReport(True, N, None, None, N, None, N)
    assert read_anchor(anchor) is not None


def test_empty_log_verifies(instance: Instance) -> None:
    assert check(instance) == VerifyReport(True, 0, None, None, None)


@pytest.mark.parametrize(
    ("column", "value"),
    [
        ("actor", "'mallory'"),
        ("outcome", "'denied'"),
        ("after", "'{\"n\": 700}'"),
        ("source", "NULL"),
        ("prev_hash", "'" + "1" * 64 + "'"),
        ("hash", "'" + "2" * 64 + "'"),
    ],
)
def test_edited_field_is_found(chain: Instance, attacker: sa.Engine, column: str, value: str) -> None:
    sql(attacker, f"UPDATE audit_log SET {column} = {value} WHERE seq = 7")
    assert_bad(check(chain), 7, "edited", "entry 7 was edited: its hash does not match its contents")


def test_edited_time_is_found(chain: Instance, attacker: sa.Engine) -> None:
    at = row(attacker, 7)["at"]
    with attacker.begin() as connection:
        connection.execute(
            sa.update(audit_log).where(audit_log.c.seq == 7).values(at=at.replace(microsecond=1))
        )
    assert_bad(check(chain), 7, "edited")


def test_edit_rehashed_is_found_at_its_signed_head(chain: Instance, attacker: sa.Engine) -> None:
    rehash(attacker, 7, actor="mallory")
    problem = "entry 7 was edited and re-hashed: it does not match the head signed for it"
    assert_bad(check(chain), 7, "edited", problem)


def test_edit_rehashed_without_its_head_breaks_the_next_link(chain: Instance, attacker: sa.Engine) -> None:
    rehash(attacker, 7, actor="mallory")
    sql(attacker, "DELETE FROM audit_heads WHERE seq = 7")
    problem = "entry 8 does not link to entry 7: entry 7 was edited and re-hashed, or entry 8 was replaced"
    assert_bad(check(chain), 8, "edited", problem)


def test_whole_tail_rehashed_is_found_where_it_starts(chain: Instance, attacker: sa.Engine) -> None:
    rehash(attacker, 7, actor="mallory")
    for seq in range(8, N + 1):
        rehash(attacker, seq, prev_hash=row(attacker, seq - 1)["hash"])
    assert_bad(check(chain), 7, "edited")
    sql(attacker, "DELETE FROM audit_heads WHERE seq >= 7")
    assert_bad(check(chain), 7, "unsigned_append", "entry 7 was added after the last signed head")


def test_deleted_entry_is_found(chain: Instance, attacker: sa.Engine) -> None:
    sql(attacker, "DELETE FROM audit_log WHERE seq = 12")
    assert_bad(check(chain), 12, "missing", "entry 12 is missing (sequence jumps from 11 to 13)")


def test_deleted_entry_is_found_after_renumbering(chain: Instance, attacker: sa.Engine) -> None:
    sql(attacker, "DELETE FROM audit_log WHERE seq = 12", "UPDATE audit_log SET seq = seq - 1 WHERE seq > 12")
    problem = "entry 12 is missing (later entries were renumbered to close the gap)"
    assert_bad(check(chain), 12, "missing", problem)


def test_deleted_first_entry_is_found(chain: Instance, attacker: sa.Engine) -> None:
    sql(attacker, "DELETE FROM audit_log WHERE seq = 1")
    assert_bad(check(chain), 1, "missing", "entry 1 is missing (sequence jumps from 0 to 2)")


@pytest.mark.parametrize("heads_too", [False, True], ids=["entries-shifted", "entries-and-heads-shifted"])
def test_inserted_entry_is_found(chain: Instance, attacker: sa.Engine, heads_too: bool) -> None:
    shift_up(attacker, "audit_log", 10)
    if heads_too:
        shift_up(attacker, "audit_heads", 10)
    forge(attacker, 10, row(attacker, 9)["hash"])
    assert_bad(check(chain), 10, "reordered", "entry 10 is out of order or inserted")


def test_entry_inserted_before_the_first_is_found(chain: Instance, attacker: sa.Engine) -> None:
    forge(attacker, 0, "0" * 64)
    assert_bad(check(chain), 0, "reordered", "entry 0 is out of order or inserted")


def test_entry_appended_without_signed_head_is_found(chain: Instance, attacker: sa.Engine) -> None:
    forge(attacker, N + 1, row(attacker, N)["hash"])
    assert_bad(check(chain), N + 1, "unsigned_append", f"entry {N + 1} was added after the last signed head")


@pytest.mark.parametrize(("first", "second"), [(5, 6), (5, 9)])
def test_swapped_entries_are_found(chain: Instance, attacker: sa.Engine, first: int, second: int) -> None:
    sql(
        attacker,
        f"UPDATE audit_log SET seq = -1 WHERE seq = {first}",
        f"UPDATE audit_log SET seq = {first} WHERE seq = {second}",
        f"UPDATE audit_log SET seq = {second} WHERE seq = -1",
    )
    assert_bad(check(chain), first, "reordered", f"entry {first} is out of order or inserted")


def test_truncation_is_found_by_the_signed_head(chain: Instance, attacker: sa.Engine) -> None:
    sql(attacker, f"DELETE FROM audit_log WHERE seq > {N - 3}")
    problem = f"chain ends at {N - 3} but the signed head is at {N}: entries were removed from the end"
    assert_bad(check(chain, anchored=False), N - 2, "truncated", problem)


def test_truncation_with_its_heads_is_found_by_the_anchor(chain: Instance, attacker: sa.Engine) -> None:
    sql(
        attacker, f"DELETE FROM audit_log WHERE seq > {N - 3}", f"DELETE FROM audit_heads WHERE seq > {N - 3}"
    )
    assert check(chain, anchored=False).ok  # what the database alone can tell
    problem = f"chain ends at {N - 3} but the anchor file records a signed head at {N}: entries were removed"
    problem += " from the end"
    assert_bad(check(chain), N - 2, "truncated", problem)


def test_head_signed_with_another_key_is_found(chain: Instance, attacker: sa.Engine) -> None:
    mallory = Signer(Ed25519PrivateKey.generate())
    head = row(attacker, N)
    with attacker.begin() as connection:
        connection.execute(
            sa.update(audit_heads)
            .where(audit_heads.c.seq == N)
            .values(signature=mallory.sign(head_message(N, head["hash"])), public_key=mallory.public_key)
        )
    assert_bad(check(chain), N, "bad_signature", "the signed head's signature is invalid")


def test_forged_head_for_a_forged_entry_is_found(chain: Instance, attacker: sa.Engine) -> None:
    forge(attacker, N + 1, row(attacker, N)["hash"])
    with attacker.connect() as connection:
        signed = connection.execute(sa.select(audit_heads).where(audit_heads.c.seq == N)).one()._mapping
    with attacker.begin() as connection:
        values = {**signed, "seq": N + 1, "hash": row(attacker, N + 1)["hash"]}
        connection.execute(audit_heads.insert().values({k: v for k, v in values.items() if k != "id"}))
    assert_bad(check(chain), N + 1, "bad_signature")


def test_tampered_anchor_file_is_found(chain: Instance, anchor: Path) -> None:
    body = json.loads(anchor.read_text())
    anchor.write_text(json.dumps({**body, "seq": N + 5}))
    assert_bad(check(chain), N + 5, "bad_anchor", "the anchor file's signature is invalid")
    anchor.write_text("not json")
    assert_bad(check(chain), None, "bad_anchor")
    with pytest.raises(AnchorError):
        read_anchor(anchor)


def test_anchor_moves_only_forward_and_after_commit(chain: Instance, anchor: Path) -> None:
    log = chain.audit

    def failed_change() -> None:
        with chain.engine.begin() as connection:
            log.append(connection, ALICE, event(99))
            raise RuntimeError("the change failed")

    with pytest.raises(RuntimeError):
        failed_change()
    stored = read_anchor(anchor)
    assert stored is not None
    assert stored.seq == N
    log.record(chain.engine, ALICE, event(100))
    stored = read_anchor(anchor)
    assert stored is not None
    assert stored.seq == N + 1
    write_anchor(anchor, 3, "f" * 64, "old")
    assert read_anchor(anchor) == stored
    assert [p.name for p in anchor.parent.iterdir() if p.name.startswith(f".{anchor.name}")] == []
    assert check(chain).ok


def test_refusal_is_recorded_as_denied(chain: Instance) -> None:
    outsider = Actor(name="mallory", source="10.6.6.6")
    grant = AuditEvent("user.grant", "user:mallory", after={"tenant": "default", "roles": ["admin"]})
    with pytest.raises(Forbidden):
        chain.audit.authorize(chain.engine, outsider, "default", Role.ADMIN, grant)
    entry = row(chain.engine, N + 1)
    assert (entry["actor"], entry["action"], entry["outcome"]) == ("mallory", "user.grant", "denied")
    assert (entry["before"], entry["after"], entry["source"]) == (None, None, "10.6.6.6")
    admin = Actor(name="root", roles={"default": frozenset({Role.ADMIN})})
    chain.audit.authorize(chain.engine, admin, "default", Role.ADMIN, grant)
    assert check(chain) == VerifyReport(True, N + 1, None, None, N + 1, None, N + 1)


def test_concurrent_appends_make_a_gapless_chain(instance: Instance, anchor: Path) -> None:
    log, failures = instance.audit, []

    def work(worker: int) -> None:
        for n in range(10):
            try:
                log.record(instance.engine, Actor(name=f"worker-{worker}"), event(n))
            except Exception as exc:
                failures.append(exc)

    threads = [threading.Thread(target=work, args=(w,)) for w in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
    assert check(instance) == VerifyReport(True, 40, None, None, 40, None, 40)


class FixedClock:
    def __init__(self, times: list[datetime]) -> None:
        self.times = iter(times)

    def now(self, tz: Any = None) -> datetime:
        return next(self.times)


def test_hashes_recompute_from_stored_values(
    instance: Instance, anchor: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    times = [
        datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC),
        datetime(2026, 3, 1, 12, 0, 0, 1, tzinfo=UTC),
        datetime(2026, 3, 1, 12, 0, 0, 999999, tzinfo=UTC),
        datetime(1970, 1, 1, tzinfo=UTC),
        datetime(2024, 2, 29, 23, 59, 59, 10, tzinfo=UTC),
    ]
    monkeypatch.setattr(audit_module, "datetime", FixedClock(times))
    odd = AuditEvent(
        "prompt.push", 'prompt:"q"\\n\n', {"ü": [1, None, True]}, {"emoji": "🔒", "z": {"a": ""}}
    )
    for n, _ in enumerate(times):
        instance.audit.record(instance.engine, Actor(name=f"zoë-{n}", request_id="r" * 60), odd)
    assert [row(instance.engine, n + 1)["at"] for n in range(len(times))] == times
    assert check(instance).ok


def run(instance: Instance, *args: str) -> Result:
    return CliRunner().invoke(audit, [*args, "--data-dir", str(instance.data)])


def test_cli_verify_exit_codes(chain: Instance, attacker: sa.Engine) -> None:
    result = run(chain, "verify")
    key = load_signer(chain.data).public_key
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[0] == f"ok: {N} entries, head at seq {N}, signed by {key}"
    sql(attacker, "UPDATE audit_log SET actor = 'mallory' WHERE seq = 7")
    result = run(chain, "verify")
    assert result.exit_code == 1
    assert result.stdout == "TAMPERED: entry 7 was edited: its hash does not match its contents\n"
    other = Signer(Ed25519PrivateKey.generate()).public_key
    sql(attacker, "UPDATE audit_log SET actor = 'alice' WHERE seq = 7")
    assert run(chain, "verify").exit_code == 0
    assert run(chain, "verify", "--public-key", other).exit_code == 1


def test_cli_show_lists_newest_first(chain: Instance) -> None:
    result = run(chain, "show", "--limit", "3")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert [line.split()[0] for line in lines[1:]] == ["25", "24", "23"]
    shown = json.loads(run(chain, "show", "--action", "user.grant", "--json").stdout)
    assert [e["seq"] for e in shown] == [24, 21, 18, 15, 12, 9, 6, 3]
    assert shown[0]["after"] == {"n": 24, "note": "café ✓"}
    assert shown[0]["actor"] == "bob"


def test_secrets_never_reach_the_log_or_the_screen(instance: Instance, anchor: Path) -> None:
    instance.tenants.create("default")
    instance.users.create(None, "root", {"default": [Role.ADMIN]})
    token = instance.users.issue_token(None, "root")
    key = instance.control().keys.create("default", name="ci", role="client")
    with instance.engine.connect() as connection:
        stored = repr(connection.execute(sa.select(audit_log)).all())
    assert token.prefix in stored
    assert key.info.prefix in stored
    assert token.secret not in stored
    assert key.secret not in stored
    slipped = AuditEvent(
        "key.create", "key:x", after={"password": "hunter2", "note": "lg-0123abcd-LeakedBits"}
    )
    instance.audit.record(instance.engine, ALICE, slipped)
    for args in [("show",), ("show", "--json")]:
        result = run(instance, *args)
        assert result.exit_code == 0, result.output
        for secret in (token.secret, key.secret, "hunter2", "LeakedBits"):
            assert secret not in result.stdout
    assert "lg-0123abcd-[redacted]" in run(instance, "show", "--json").stdout


def test_verify_sees_one_state_while_appends_go_on(chain: Instance) -> None:
    done = threading.Event()

    def append() -> None:
        for n in range(60):
            chain.audit.record(chain.engine, ALICE, event(n))
        done.set()

    appender = threading.Thread(target=append)
    appender.start()
    reports = []
    while not done.is_set():
        reports.append(check(chain))
    appender.join()
    assert [r for r in reports if not r.ok] == []
    assert check(chain).entries == N + 60

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
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

import lockgate.security.audit as audit_module
from lockgate.instance import Instance, open_instance
from lockgate.security.audit import AuditEvent, AuditLog, entry_hash, head_message
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
from lockgate.service_errors import Forbidden, Invalid
from lockgate.services import Services
from lockgate.store.tables import audit_heads, audit_log
from tests.support.people import person, token_of

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
def log(services: Services) -> AuditLog:
    return services.audit


@pytest.fixture
def chain(instance: Instance, log: AuditLog, anchor: Path) -> Instance:
    """25 entries, appended in transactions of their own and inside callers' transactions."""
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
    key = instance.signer.public_key
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


def test_anchor_moves_only_forward_and_after_commit(chain: Instance, log: AuditLog, anchor: Path) -> None:
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


def test_refusal_is_recorded_as_denied(chain: Instance, services: Services) -> None:
    outsider = Actor(name="mallory", source="10.6.6.6")
    with pytest.raises(Forbidden):
        services.authz.require(outsider, "users.grant", "default", "user:mallory")
    entry = row(chain.engine, N + 1)
    assert (entry["actor"], entry["action"], entry["outcome"]) == ("mallory", "users.grant", "denied")
    assert (entry["resource"], entry["source"]) == ("user:mallory", "10.6.6.6")
    assert (entry["before"], entry["after"]) == (None, None)
    admin = Actor(name="root", roles={"default": frozenset({Role.ADMIN})})
    services.authz.require(admin, "users.grant", "default", "user:mallory")  # allowed: nothing written
    assert check(chain) == VerifyReport(True, N + 1, None, None, N + 1, None, N + 1)


def test_concurrent_appends_make_a_gapless_chain(instance: Instance, log: AuditLog, anchor: Path) -> None:
    failures: list[Exception] = []

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
    instance: Instance, log: AuditLog, anchor: Path, monkeypatch: pytest.MonkeyPatch
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
        log.record(instance.engine, Actor(name=f"zoë-{n}", request_id="r" * 60), odd)
    assert [row(instance.engine, n + 1)["at"] for n in range(len(times))] == times
    assert check(instance).ok


def test_platform_viewers_verify_with_the_servers_key(
    services: Services, instance: Instance, admin: Actor, chain: Instance, attacker: sa.Engine
) -> None:
    vera = person(services, admin, "vera", Role.VIEWER)
    with attacker.connect() as connection:
        total = AuditLog.count(connection)
    verified = services.trail.verify(vera)
    assert verified.report == VerifyReport(True, total, None, None, total, None, total)
    assert verified.public_key == instance.signer.public_key
    assert verified.anchor == anchor_path(instance.data)

    seq = total - 3
    actor = row(attacker, seq)["actor"]
    sql(attacker, f"UPDATE audit_log SET actor = 'mallory' WHERE seq = {seq}")
    tampered = services.trail.verify(vera).report
    assert (tampered.ok, tampered.first_bad_seq, tampered.kind) == (False, seq, "edited")
    assert tampered.problem == f"entry {seq} was edited: its hash does not match its contents"
    sql(attacker, f"UPDATE audit_log SET actor = '{actor}' WHERE seq = {seq}")
    assert services.trail.verify(vera).report.ok
    # Against any other key the same chain does not verify: the heads were signed with the server's.
    other = Signer(Ed25519PrivateKey.generate()).public_key
    assert_bad(verify(instance.engine, other, None), total, "bad_signature")


def test_only_platform_people_verify_or_read_the_log(
    services: Services, admin: Actor, admin_token: str
) -> None:
    services.tenants.create(admin, "acme")
    acme_admin = services.tokens.authenticate(admin_token)
    otto = person(services, acme_admin, "otto", Role.ADMIN, tenant="acme")
    vera = person(services, admin, "vera", Role.VIEWER)
    with pytest.raises(Forbidden):
        services.trail.verify(otto)
    with pytest.raises(Forbidden):
        services.trail.recent(otto)
    with pytest.raises(Forbidden):
        services.trail.recent(vera)  # reading entries is for platform admins
    denied = [e for e in services.trail.recent(admin, limit=3) if e["outcome"] == "denied"]
    assert [(e["actor"], e["action"]) for e in denied] == [
        ("vera", "audit.list"),
        ("otto", "audit.list"),
        ("otto", "audit.verify"),
    ]


def test_a_server_without_its_signing_key_refuses_to_open_and_mints_none(
    instance: Instance, chain: Instance
) -> None:
    """Regression: `audit verify` minted a signing key when none was present, so a lost key was
    silently replaced and the chain then failed (or, worse, a forged chain verified) with the new one."""
    key_file = instance.data / "signing-key"
    assert key_file.exists()
    key_file.unlink()
    with pytest.raises(Invalid, match="no signing key"):
        open_instance(instance.data)
    with pytest.raises(Invalid, match="no signing key"):
        load_signer(instance.data)
    assert not key_file.exists()
    # The installation's own key still verifies its chain.
    assert check(chain).ok


def shown(services: Services, admin: Actor) -> str:
    """What a platform admin reads of the log (``lockgate audit show`` asks the server for it)."""
    return json.dumps(services.trail.recent(admin, limit=1000), ensure_ascii=False)


def test_secrets_never_reach_the_log_or_the_screen(
    services: Services, instance: Instance, admin: Actor, anchor: Path
) -> None:
    invitation = services.users.invite(admin, "default", "root", [Role.ADMIN])
    token = services.users.redeem(invitation.code)
    own = services.tokens.create(admin, "ci")
    ci = token_of(services, admin, "ci-bot", Role.DEPLOYER)
    key = services.keys.create(admin, "default", name="ci", role="client")
    with instance.engine.connect() as connection:
        stored = repr(connection.execute(sa.select(audit_log)).all())
    assert token.info.prefix in stored
    assert own.info.prefix in stored
    assert key.info.prefix in stored
    secrets = (token.secret, own.secret, ci, key.secret, invitation.code)
    for secret in secrets:
        assert secret not in stored
    slipped = AuditEvent(
        "key.create", "key:x", after={"password": "hunter2", "note": "lg-0123abcd-LeakedBits"}
    )
    services.audit.record(instance.engine, ALICE, slipped)
    text = shown(services, admin)
    for secret in (*secrets, "hunter2", "LeakedBits"):
        assert secret not in text
    assert "lg-0123abcd-[redacted]" in text
    newest = services.trail.recent(admin, limit=1)[0]
    assert newest["after"] == {"password": "[redacted]", "note": "lg-0123abcd-[redacted]"}


def test_recent_lists_newest_first_and_filters_by_action(
    admin: Actor, chain: Instance, services: Services
) -> None:
    with chain.engine.connect() as connection:
        total = AuditLog.count(connection)
    assert [e["seq"] for e in services.trail.recent(admin, limit=3)] == [total, total - 1, total - 2]
    shown = services.trail.recent(admin, action="user.grant")
    assert [e["after"]["n"] for e in shown] == [24, 21, 18, 15, 12, 9, 6, 3]
    assert shown[0]["after"] == {"n": 24, "note": "café ✓"}
    assert shown[0]["actor"] == "bob"


def test_verify_sees_one_state_while_appends_go_on(chain: Instance, log: AuditLog) -> None:
    done = threading.Event()

    def append() -> None:
        for n in range(60):
            log.record(chain.engine, ALICE, event(n))
        done.set()

    appender = threading.Thread(target=append)
    appender.start()
    reports = []
    while not done.is_set():
        reports.append(check(chain))
    appender.join()
    assert [r for r in reports if not r.ok] == []
    assert check(chain).entries == N + 60

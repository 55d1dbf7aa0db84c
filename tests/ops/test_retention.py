"""Stored prompt and completion text is deleted once its retention period is over."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import sqlalchemy as sa

from lockgate.config.schema import RequestLogConfig
from lockgate.instance import Instance
from lockgate.ops.records import RequestRecord
from lockgate.ops.request_log import RequestLog
from lockgate.store.tables import request_content, request_log


def record(request_id: str) -> RequestRecord:
    return RequestRecord(
        id=request_id,
        created_at=datetime.now(UTC),
        endpoint="chat.completions",
        stream=False,
        status_code=200,
        latency_ms=1.0,
        request_body=b'{"messages": "secret prompt"}',
        response_body="an answer",
    )


def test_expired_content_is_purged_and_fresh_content_kept(instance: Instance) -> None:
    writer = RequestLog(instance.engine, RequestLogConfig(store_content=True, content_retention_days=1))
    writer.start()
    writer.submit(record("req_old"))
    writer.submit(record("req_new"))
    writer.close()
    with instance.engine.begin() as connection:
        connection.execute(
            sa.update(request_content)
            .where(request_content.c.request_id == "req_old")
            .values(expires_at=datetime.now(UTC) - timedelta(minutes=1))
        )
    # A fresh writer purges on its first pass.
    purger = RequestLog(instance.engine, RequestLogConfig(store_content=True, content_retention_days=1))
    purger.start()
    purger.close()
    with instance.engine.connect() as connection:
        kept = set(connection.execute(sa.select(request_content.c.request_id)).scalars())
        logged = set(connection.execute(sa.select(request_log.c.id)).scalars())
    assert kept == {"req_new"}
    assert logged == {"req_old", "req_new"}  # the accounting record outlives the text


def test_content_is_not_written_unless_configured(instance: Instance) -> None:
    writer = RequestLog(instance.engine, RequestLogConfig())
    writer.start()
    writer.submit(record("req_plain"))
    writer.close()
    with instance.engine.connect() as connection:
        assert connection.execute(sa.select(sa.func.count()).select_from(request_content)).scalar() == 0
        assert connection.execute(sa.select(request_log.c.id)).scalars().all() == ["req_plain"]


def test_a_record_the_store_refuses_loses_only_itself(instance: Instance) -> None:
    dropped: list[tuple[str, int]] = []
    writer = RequestLog(
        instance.engine,
        RequestLogConfig(flush_interval=0.5),
        on_dropped=lambda reason, count: dropped.append((reason, count)),
    )
    writer.start()
    ids = [f"req_{i}" for i in range(7)]
    for request_id in ids[:3]:
        writer.submit(record(request_id))
    bad = record("req_bad")
    bad.endpoint = None  # type: ignore[assignment]  # a NOT NULL column: the store refuses the row
    writer.submit(bad)
    for request_id in ids[3:]:
        writer.submit(record(request_id))
    writer.close()
    with instance.engine.connect() as connection:
        logged = sorted(connection.execute(sa.select(request_log.c.id)).scalars())
    assert logged == ids
    assert (writer.written, writer.refused, writer.dropped) == (7, 1, 1)
    assert dropped == [("refused", 1)]


def test_a_record_written_twice_is_stored_once_and_not_counted_as_dropped(instance: Instance) -> None:
    # What a retry does when the store committed a batch but the answer was lost on the way back.
    writer = RequestLog(instance.engine, RequestLogConfig(flush_interval=0.5, store_content=True))
    writer.start()
    writer.submit(record("req_a"))
    writer.submit(record("req_a"))
    writer.submit(record("req_b"))
    writer.close()
    with instance.engine.connect() as connection:
        logged = sorted(connection.execute(sa.select(request_log.c.id)).scalars())
        texts = sorted(connection.execute(sa.select(request_content.c.request_id)).scalars())
    assert logged == texts == ["req_a", "req_b"]
    assert writer.dropped == 0

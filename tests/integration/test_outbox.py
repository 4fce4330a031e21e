"""The single outbox against the real PostgreSQL and Kafka: an event is queued once per event_id, the writer
publishes what it committed, one key's events leave in the order written even when an older one is stuck
with another writer, and the relay takes only what writers left behind."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest
import pytest_asyncio

from services.core.adapters.store.outbox import Outbox, OutboxEntry
from services.core.application import outbox
from tests.support.kafka_tail import Tail
from tests.support.stack import Stack
from tests.support.wait import wait_until

pytestmark = [pytest.mark.asyncio(loop_scope="session"), pytest.mark.integration]

TOPIC = "mailsync.notices.v1"  # read by no service of the stack


@pytest_asyncio.fixture(loop_scope="session")
async def tail(stack: Stack) -> AsyncIterator[Tail]:
    tail = await Tail(stack.env["MAILSYNC_KAFKA_BOOTSTRAP"], TOPIC).start()
    yield tail
    await tail.stop()


def _event(key: str, n: int) -> OutboxEntry:
    return outbox.entry_from_dict(TOPIC, key, {"type": "test.outbox", "event_id": str(uuid.uuid4()), "n": n})


async def _published(db, ids: list[int]) -> list[bool]:
    rows = await db.fetch("SELECT outbox_id, published_at IS NOT NULL AS done FROM outbox"
                          " WHERE outbox_id = ANY($1::bigint[]) ORDER BY outbox_id", ids)
    return [r["done"] for r in rows]


async def _seen(tail: Tail, key: str, count: int) -> list[int]:
    async def arrived() -> list[int] | None:
        got = [v["n"] for k, v in await tail.poll() if k == key]
        return got if len(got) >= count else None

    return await wait_until(arrived, timeout=20, what=f"{count} records of {key}")


async def test_queued_once_published_by_the_writer_in_order(stack: Stack, db, tail: Tail):
    key = f"k-{uuid.uuid4()}"
    entries = [_event(key, n) for n in range(3)]
    async with db.acquire() as conn, conn.transaction():
        ids = await Outbox(conn).add(entries)
    assert len(ids) == 3
    assert await Outbox(db).add(entries) == []  # a redelivered change queues nothing again
    assert await _published(db, ids) == [False, False, False]

    await outbox.publish_now(db, stack.publisher, ids)

    assert await _seen(tail, key, 3) == [0, 1, 2]
    assert await _published(db, ids) == [True, True, True]
    record = json.loads(bytes(await db.fetchval("SELECT value FROM outbox WHERE outbox_id = $1", ids[0])))
    assert record == {"type": "test.outbox", "event_id": entries[0].event_id, "n": 0}


async def test_a_key_waits_behind_its_older_unpublished_event(stack: Stack, db, tail: Tail):
    key, other = f"k-{uuid.uuid4()}", f"k-{uuid.uuid4()}"
    first = await Outbox(db).add([_event(key, 1)])
    # Another writer holds the older event (claimed, not yet published): the newer one of the same key must wait,
    # a different key need not.
    assert [c.outbox_id for c in await Outbox(db).claim_ids(first, lease=timedelta(minutes=1))] == first
    later = await Outbox(db).add([_event(key, 2), _event(other, 9)])
    await outbox.publish_now(db, stack.publisher, later)
    assert await _seen(tail, other, 1) == [9]
    assert await _published(db, first + later) == [False, False, True]

    # That writer failed and let go: the relay sends both, oldest first.
    await Outbox(db).release(first)
    await outbox.relay_once(db, stack.publisher, left_behind=timedelta(0))
    assert await _seen(tail, key, 2) == [1, 2]
    assert await _published(db, first + later) == [True, True, True]


async def test_a_writer_waits_briefly_behind_another_writer_of_the_same_key(stack: Stack, db, tail: Tail):
    key = f"k-{uuid.uuid4()}"
    first = await Outbox(db).add([_event(key, 1)])
    held = await Outbox(db).claim_ids(first, lease=timedelta(minutes=1))  # another writer, mid-publish
    later = await Outbox(db).add([_event(key, 2)])

    async def other_writer() -> None:
        await asyncio.sleep(0.05)  # the time its publish takes
        await stack.publisher.publish_encoded([(c.topic, c.key, c.value) for c in held])
        await Outbox(db).mark_published(first)

    await asyncio.gather(outbox.publish_now(db, stack.publisher, later), other_writer())
    # Both out when publish_now returns, in order: the writer waited, not the relay (10 s away).
    assert await _published(db, first + later) == [True, True]
    assert await _seen(tail, key, 2) == [1, 2]


async def test_the_relay_leaves_fresh_events_to_their_writer(stack: Stack, db):
    ids = await Outbox(db).add([_event(f"k-{uuid.uuid4()}", 1)])
    await outbox.relay_once(db, stack.publisher, left_behind=timedelta(minutes=5))
    assert await _published(db, ids) == [False]
    await outbox.relay_once(db, stack.publisher, left_behind=timedelta(0))
    assert await _published(db, ids) == [True]

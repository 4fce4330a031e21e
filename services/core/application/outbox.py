"""The transactional outbox: every event that follows a database change is written in the change's own
transaction (`entry` + `Outbox.add`), then published after the commit.

Two publishers, one table: the writer publishes what it just committed (`publish_now`), and the relay
(`relay_once`, run by the matcher and the renewer) publishes whatever a writer left behind — killed between
its commit and its publish, or Kafka down at that moment. Both claim rows with a short lease in their own
statement, so no transaction is open while Kafka is called; a crash after publishing and before the mark
republishes the same record (same event_id: consumers deduplicate on it). One key's events leave in the
order they were written.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

import asyncpg
from prometheus_client import Counter, Gauge

from services.core.adapters.kafka import Publisher, PublishError
from services.core.adapters.store.outbox import Claimed, Outbox, OutboxEntry
from services.core.domain import events
from services.core.domain.event_types import Event, encode

__all__ = ["OutboxEntry", "entry", "entry_from_dict", "publish_now", "relay_once"]

log = logging.getLogger(__name__)

PUBLISHED = Counter("mailsync_outbox_published_total", "Outbox records published", ["by"])
UNPUBLISHED = Gauge("mailsync_outbox_unpublished", "Outbox records not yet published (seen by the last relay pass)")

LEASE = timedelta(seconds=30)  # longer than one publish of a batch with the producer's retries
LEFT_BEHIND = timedelta(seconds=10)  # the writer publishes within this; older rows are the relay's
BATCH = 500
RELAY_EVERY_S = 2.0
BEHIND_ANOTHER_WRITER = (0.02, 0.05, 0.1, 0.2, 0.5)  # seconds, then the rest is the relay's
KEEP_PUBLISHED = timedelta(days=7)  # for an operator's look after an incident, then purged


def entry(topic: str, key: str, event: Event) -> OutboxEntry:
    """A typed event, encoded once: the outbox row holds the record exactly as Kafka will."""
    return OutboxEntry(topic, key, event.event_id, encode(event))


def entry_from_dict(topic: str, key: str, value: dict[str, Any]) -> OutboxEntry:
    """For producers that still build the event as a dict (it must carry its event_id)."""
    return OutboxEntry(topic, key, str(value["event_id"]), events.encode(value))


async def _publish(pool: asyncpg.Pool, publisher: Publisher, claimed: list[Claimed], by: str) -> int:
    if not claimed:
        return 0
    ids = [c.outbox_id for c in claimed]
    try:
        await publisher.publish_encoded([(c.topic, c.key, c.value) for c in claimed])
    except BaseException:
        await Outbox(pool).release(ids)
        raise
    await Outbox(pool).mark_published(ids)
    PUBLISHED.labels(by).inc(len(claimed))
    return len(claimed)


async def publish_now(pool: asyncpg.Pool, publisher: Publisher | None, ids: Sequence[int]) -> None:
    """After the commit: publish the rows just written. Best effort: what fails is left to the relay.

    A row whose key has an older row another writer is publishing waits for it a little (that writer is
    usually done within milliseconds) rather than falling back to the relay's 10 s."""
    if publisher is None or not ids:
        return
    store = Outbox(pool)
    waiting = list(ids)
    try:
        for pause in (*BEHIND_ANOTHER_WRITER, None):
            claimed = await store.claim_ids(waiting, lease=LEASE)
            await _publish(pool, publisher, claimed, "writer")
            done = {c.outbox_id for c in claimed}
            waiting = [i for i in waiting if i not in done]
            if not waiting or pause is None or not (waiting := await store.still_unpublished(waiting)):
                return
            await asyncio.sleep(pause)
    except (PublishError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        log.warning("events left to the outbox relay", extra={"error": type(exc).__name__, "count": len(ids)})


async def relay_once(pool: asyncpg.Pool, publisher: Publisher, *, left_behind: timedelta = LEFT_BEHIND) -> int:
    """One pass of the relay: publish what writers left behind, oldest first; purge what is long published.
    Returns how many records were published."""
    store = Outbox(pool)
    published = 0
    while True:
        claimed = await store.claim(lease=LEASE, limit=BATCH, older_than=left_behind)
        published += await _publish(pool, publisher, claimed, "relay")
        if len(claimed) < BATCH:
            break
    await store.purge_published(older_than=KEEP_PUBLISHED, limit=10_000)
    UNPUBLISHED.set(await store.unpublished())
    return published

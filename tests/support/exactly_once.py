"""Exactly-once, checked from both ends: the engagement rows in PostgreSQL and the engagement.created
records on mailsync.engagements.v1. The unique key caps rows at one per message and the event id is
stable, so counting rows alone can only catch losses; this counts the Kafka records as well."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from services.core.domain.events import stable_event_id
from tests.support.kafka_tail import Tail
from tests.support.wait import wait_until


@dataclass
class Audit:
    engagements: int  # rows for the messages
    records: int  # engagement.created records for them on Kafka
    event_ids: int  # distinct event ids among those records
    redelivered: int = 0  # records - event_ids: the same event again (at-least-once, allowed)
    per_engagement: dict[str, int] = field(default_factory=dict)  # engagement_id → records

    def summary(self) -> str:
        return (f"{self.engagements} engagements, {self.records} engagement.created records, "
                f"{self.event_ids} distinct event ids, {self.redelivered} redelivered copies")


async def _engagements(db: asyncpg.Pool | asyncpg.Connection, account_id: str) -> list[dict[str, Any]]:
    """The account's engagement rows, each with `published`: its engagement.created (the outbox row written
    with the engagement, found by its stable event id) acknowledged by Kafka and marked."""
    rows = await db.fetch("SELECT engagement_id, internet_message_id FROM engagements WHERE account_id = $1",
                          account_id)
    event_ids = {stable_event_id("engagement.created", str(r["engagement_id"])): r for r in rows}
    published = {str(r["event_id"]) for r in await db.fetch(
        "SELECT event_id FROM outbox WHERE event_id = ANY($1::uuid[]) AND published_at IS NOT NULL",
        list(event_ids))}
    return [{"engagement_id": r["engagement_id"], "internet_message_id": r["internet_message_id"],
             "published": event_id in published} for event_id, r in event_ids.items()]


async def unpublished(db: asyncpg.Pool | asyncpg.Connection, account_id: str) -> list[str]:
    """Engagements committed but not yet acknowledged as published (their outbox row not marked)."""
    return [str(r["engagement_id"]) for r in await _engagements(db, account_id) if not r["published"]]


async def audit_engagements(db: asyncpg.Pool, tail: Tail, account_id: str, imids: list[str], *,
                            timeout: float = 120.0) -> Audit:
    """Every message is exactly one engagement row; every engagement row was published (its outbox row marked,
    and at least one engagement.created on Kafka); exactly one distinct event per engagement (copies of
    the same event_id are counted, a second different event fails); no record for an engagement the
    database does not hold."""
    wanted = set(imids)
    assert len(wanted) == len(imids), "the test delivered the same internet message id twice"

    async def rows_done() -> list[dict[str, Any]] | None:
        rows = await _engagements(db, account_id)
        have = {r["internet_message_id"] for r in rows}
        return rows if wanted <= have and all(r["published"] for r in rows) else None

    try:
        rows = await wait_until(rows_done, timeout=timeout, interval=0.2,
                                what=f"{len(wanted)} engagements stored and marked published")
    except AssertionError:
        rows = await _engagements(db, account_id)
        stored = {r["internet_message_id"] for r in rows} & wanted
        published = {r["internet_message_id"] for r in rows if r["published"]} & wanted
        raise AssertionError(f"after {timeout}s: {len(stored)} of {len(wanted)} messages are engagements, "
                             f"{len(published)} marked published; e.g. missing {sorted(wanted - stored)[:3]}, "
                             f"unpublished {sorted(stored - published)[:3]}") from None
    per_message: dict[str, list[str]] = defaultdict(list)
    for r in rows:
        per_message[r["internet_message_id"]].append(str(r["engagement_id"]))
    assert set(per_message) == wanted, f"engagements for messages never delivered: {set(per_message) - wanted}"
    doubled = {m: ids for m, ids in per_message.items() if len(ids) != 1}
    assert not doubled, f"messages with more than one engagement: {doubled}"
    engagement_of = {m: ids[0] for m, ids in per_message.items()}
    by_id = {e: m for m, e in engagement_of.items()}

    def records() -> list[dict[str, Any]]:
        return [v for v in tail.matching(type="engagement.created", account_id=account_id)
                if v.get("engagement_id") in by_id or v.get("internet_message_id") in wanted]

    async def all_published() -> bool:
        await tail.poll()
        return {v.get("engagement_id") for v in records()} >= set(by_id)

    try:
        await wait_until(all_published, timeout=timeout, interval=0.2,
                         what="an engagement.created record for every engagement")
    except AssertionError:
        seen = {v.get("engagement_id") for v in records()}
        missing = sorted(m for e, m in by_id.items() if e not in seen)
        raise AssertionError(f"{len(missing)} of {len(by_id)} engagements have no engagement.created record on "
                             f"Kafka although marked published, e.g. {missing[:3]}") from None
    await tail.poll()  # anything else already on its way
    found = records()
    events_of: dict[str, set[str]] = defaultdict(set)
    copies: dict[str, int] = defaultdict(int)
    for v in found:
        engagement_id = v.get("engagement_id")
        assert engagement_id in by_id, f"engagement.created for an engagement the database does not hold: {v}"
        assert v.get("internet_message_id") == by_id[engagement_id], f"record names the wrong message: {v}"
        events_of[engagement_id].add(v["event_id"])
        copies[engagement_id] += 1
    different = {e: ids for e, ids in events_of.items() if len(ids) > 1}
    assert not different, (f"{len(different)} engagements were announced by more than one different event "
                           f"(a double, not a redelivery): {dict(list(different.items())[:3])}")
    distinct = sum(len(ids) for ids in events_of.values())
    assert distinct == len(by_id)
    return Audit(engagements=len(by_id), records=len(found), event_ids=distinct, redelivered=len(found) - distinct,
                 per_engagement=dict(copies))

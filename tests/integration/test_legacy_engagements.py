"""The release that announces engagements through the outbox: an engagement a pod of the previous release
committed and left unannounced (published_at unset, taken by migration 0017) moves into the outbox once, with its
stable event id; the engagements this release stores (published_at never set) are left alone."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest

from services.core.application import engagements
from services.core.domain import events
from tests.support.stack import Stack

pytestmark = [pytest.mark.asyncio(loop_scope="session"), pytest.mark.integration]


async def _engagement(db, account: str, *, before_the_outbox: bool) -> str:
    engagement_id = str(uuid.uuid4())
    created_at = await db.fetchval(
        "SELECT applied_at - interval '1 hour' FROM schema_migrations WHERE version = '0016_outbox'"
        if before_the_outbox else "SELECT now()")
    await db.execute(
        """INSERT INTO engagements (engagement_id, account_id, internet_message_id, conversation_id, direction,
                                    occurred_at, participants, source, capture, created_at)
           VALUES ($1::uuid, $2, $3, 'conv', 'inbound', now(), '[]'::jsonb, 'webhook', 'metadata', $4)""",
        engagement_id, account, f"<{engagement_id}@legacy.example>", created_at)
    if before_the_outbox:  # what migration 0017 took from the previous release's unannounced rows
        await db.execute("INSERT INTO legacy_unannounced_engagements (engagement_id) VALUES ($1::uuid)", engagement_id)
    return engagement_id


async def test_an_engagement_left_unannounced_by_the_previous_release_moves_into_the_outbox_once(stack: Stack, db):
    account = stack.new_account()
    legacy = await _engagement(db, account, before_the_outbox=True)
    current = await _engagement(db, account, before_the_outbox=False)

    moved = 0
    while (step := await engagements.publish_left_behind(db, None, older_than=timedelta(0))) > 0:
        moved += step  # other tests' rows never qualify: they were all stored by this release
    assert moved == 1
    event_id = events.stable_event_id("engagement.created", legacy)
    assert await db.fetchval("SELECT count(*) FROM outbox WHERE event_id = $1::uuid", event_id) == 1
    assert not await db.fetchval("SELECT 1 FROM legacy_unannounced_engagements WHERE engagement_id = $1::uuid",
                                 legacy)
    assert await db.fetchval("SELECT count(*) FROM outbox WHERE event_id = $1::uuid",
                             events.stable_event_id("engagement.created", current)) == 0
    assert await engagements.publish_left_behind(db, None, older_than=timedelta(0)) == 0

"""The matcher's multi-row store against the real PostgreSQL: the engagement.created event it builds from what it
inserted is exactly the one the relay rebuilds from the rows, and a redelivery inserts nothing."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest

from services.core.application import engagements
from services.core.application.engagements import Copy
from services.core.domain.capture import Capture
from services.core.domain.model import (
    Decision,
    Direction,
    EmailAddress,
    MailMessage,
    MatchResult,
    Participant,
    Reason,
    Role,
)
from tests.support.stack import Stack

pytestmark = [pytest.mark.integration]


def _message(imid: str, graph_id: str, subject: str) -> MailMessage:
    return MailMessage(graph_id, imid, f"conv-{imid}", subject, "inbox", False,
                       datetime(2026, 11, 2, 9, 30, 15, 123456, tzinfo=UTC), None,
                       EmailAddress("ana@client.example", "Ana"), None, (EmailAddress("x@own.example", ""),),
                       preview="Hello, about the renewal")


def _matched(*contacts: str, clients: tuple[str, ...] = ()) -> MatchResult:
    return MatchResult(Decision.MATCHED, (Reason("contact_address", "ana"),), Direction.INBOUND,
                       (Participant("ana@client.example", "Ana", Role.FROM), Participant("x@own.example", "", Role.TO)),
                       contacts, clients)


async def test_the_event_built_by_the_insert_is_the_one_rebuilt_from_the_rows(stack: Stack, db):
    account = stack.new_account()
    run = uuid.uuid4().hex[:8]
    with_row, without_row = f"u-dir-{run}", f"u-none-{run}"
    connection = str(uuid.uuid4())
    shared, metadata_only = f"<shared-{run}@client.example>", f"<meta-{run}@client.example>"

    def copy(imid: str, user_id: str, capture: Capture, result: MatchResult, *, own: str | None,
             directory: str | None) -> Copy:
        return Copy.of(account_id=account, user_id=user_id, connection_id=connection,
                       message=_message(imid, f"g-{user_id}-{imid}", "Renewal"), result=result, source="webhook",
                       capture=capture, mailbox_address=own, directory_email=directory)

    copies = [
        # One email in three mailboxes: its own address, the directory's, none at all ('' as the rows say).
        copy(shared, f"u-own-{run}", Capture.PREVIEW, _matched("c2", "c1", clients=("k1",)), own="me@own.example",
             directory="ignored@own.example"),
        copy(shared, with_row, Capture.PREVIEW, _matched("c3"), own=None, directory="dir@own.example"),
        copy(shared, without_row, Capture.PREVIEW, _matched("c1"), own=None, directory=""),
        copy(metadata_only, with_row, Capture.METADATA, _matched("c1"), own=None, directory="dir@own.example"),
    ]
    async with db.acquire() as conn:
        transaction = conn.transaction()
        await transaction.start()
        try:
            await conn.execute("INSERT INTO accounts (account_id) VALUES ($1) ON CONFLICT DO NOTHING", account)
            await conn.execute("INSERT INTO users (user_id, account_id, email) VALUES ($1, $2, 'dir@own.example')",
                               with_row, account)
            stored = await engagements.store_engagements(conn, copies)
            assert [s.created for s in stored] == [True, True]
            # Each inserted engagement queues its engagement.created, with its stable event id.
            assert [e.event_id for e in engagements.created_entries(stored)] == [
                s.event["event_id"] for s in stored if s.event is not None]
            for s in stored:
                assert s.event is not None
                assert s.event == await engagements.created_event(conn, s.engagement_id)
            event = stored[0].event
            assert event is not None
            assert event["contact_ids"] == ["c1", "c2", "c3"] and event["client_ids"] == ["k1"]
            assert event["preview"] == "Hello, about the renewal" and event["subject"] == "Renewal"
            assert dict(zip(event["mailbox_user_ids"], event["mailbox_addresses"], strict=True)) == {
                f"u-own-{run}": "me@own.example", with_row: "dir@own.example", without_row: ""}
            assert stored[1].event is not None and "subject" not in stored[1].event

            again = await engagements.store_engagements(conn, copies[:1])  # a redelivery
            # Its event was queued by the insert: a redelivery queues no second one.
            assert [(s.created, s.event) for s in again] == [(False, None)]
            assert engagements.created_entries(again) == []
            assert await conn.fetchval("SELECT count(*) FROM engagements WHERE account_id = $1", account) == 2
            assert await conn.fetchval(
                "SELECT count(*) FROM match_decisions WHERE account_id = $1 AND decision = 'matched'", account) == 4
        finally:
            await transaction.rollback()

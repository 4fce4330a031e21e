"""Notices against the real PostgreSQL: one incident per stretch a connection needs someone, whatever the
number of status changes inside it; reminders at most once a day on an injected clock; resolved on heal."""

from __future__ import annotations

from datetime import timedelta

import pytest

from services.core.application.connections import StatusReporter
from services.core.domain.model import ConnectionStatus
from services.renewer.notices import remind
from tests.support.rows import connected_row
from tests.support.stack import Stack

pytestmark = [pytest.mark.asyncio(loop_scope="session"), pytest.mark.integration]


async def outbox(db, connection_id: str) -> list[str]:
    rows = await db.fetch("SELECT convert_from(value, 'UTF8')::jsonb ->> 'type' AS type FROM outbox"
                          " WHERE topic = 'mailsync.notices.v1'"
                          " AND convert_from(value, 'UTF8')::jsonb ->> 'connection_id' = $1 ORDER BY outbox_id",
                          connection_id)
    return [r["type"] for r in rows]


async def test_one_incident_daily_reminders_and_resolved(stack: Stack, db):
    account = stack.new_account()
    mailbox = await stack.new_mailbox(account, connect=False)
    connection_id = await connected_row(db, account, mailbox.user_id)
    status = StatusReporter(db, stack.publisher, stack.settings.app_url)

    assert await status.record(db, connection_id, ConnectionStatus.RECONNECT_REQUIRED,
                               "Your Microsoft 365 password was reset.", "AADSTS50173") is not None
    # More failures of the same incident: the status row changes, the person is not told again.
    await status.record(db, connection_id, ConnectionStatus.RECONNECT_REQUIRED, "Session revoked.", "AADSTS50133")
    await status.record(db, connection_id, ConnectionStatus.CONSENT_REQUIRED, "Approval needed.", "AADSTS90094")
    assert await outbox(db, connection_id) == ["notice.action_required"]
    notice = await db.fetchrow("SELECT * FROM notices WHERE connection_id = $1::uuid", connection_id)
    assert notice["resolved_at"] is None and notice["error_code"] == "AADSTS90094"  # reminders say what is true now

    opened = notice["last_notified_at"]
    clock = opened + timedelta(hours=23)
    await remind(db, now=lambda: clock, app_url=stack.settings.app_url)
    assert await outbox(db, connection_id) == ["notice.action_required"]  # not yet a day
    clock = opened + timedelta(days=1, minutes=1)
    await remind(db, now=lambda: clock, app_url=stack.settings.app_url)
    # twice in the same moment (two renewers): one reminder
    await remind(db, now=lambda: clock, app_url=stack.settings.app_url)
    assert await outbox(db, connection_id) == ["notice.action_required", "notice.reminder"]
    clock = opened + timedelta(days=2, minutes=2)
    await remind(db, now=lambda: clock, app_url=stack.settings.app_url)
    assert await outbox(db, connection_id) == ["notice.action_required", "notice.reminder", "notice.reminder"]
    ids = await db.fetch("SELECT event_id FROM outbox WHERE topic = 'mailsync.notices.v1'"
                         " AND convert_from(value, 'UTF8')::jsonb ->> 'notice_id' = ($1::uuid)::text",
                         notice["notice_id"])
    assert len({r["event_id"] for r in ids}) == 3

    await status.record(db, connection_id, ConnectionStatus.CONNECTED, None, None)
    assert (await outbox(db, connection_id))[-1] == "notice.resolved"
    clock = opened + timedelta(days=5)
    await remind(db, now=lambda: clock, app_url=stack.settings.app_url)  # nothing to remind once resolved
    assert await outbox(db, connection_id) == ["notice.action_required", "notice.reminder", "notice.reminder",
                                               "notice.resolved"]
    # A new failure later is a new incident, with a new notice_id.
    await status.record(db, connection_id, ConnectionStatus.RECONNECT_REQUIRED, "Again.", "AADSTS50173")
    assert await db.fetchval("SELECT count(DISTINCT notice_id) FROM notices WHERE connection_id = $1::uuid",
                             connection_id) == 2

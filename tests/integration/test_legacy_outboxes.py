"""The release that replaced notice_outbox and tenant_status_outbox with the single outbox: what pods of the
previous release left unpublished there moves into the outbox with its event ids, nothing twice; a tenant
status the outbox already holds a later one of is not republished (the topic is compacted)."""

from __future__ import annotations

import json
import uuid

import pytest

from services.core.application import tenant_status
from services.core.domain import events, notices
from services.renewer.notices import move_legacy_outboxes
from tests.support.stack import Stack
from tests.support.wait import wait_until

pytestmark = [pytest.mark.asyncio(loop_scope="session"), pytest.mark.integration]


async def test_unpublished_legacy_rows_move_into_the_outbox_once(stack: Stack, db):
    account, user_id = stack.new_account(), f"user-{uuid.uuid4().hex[:10]}"
    connection_id = await db.fetchval(
        "INSERT INTO mailbox_connections (account_id, user_id, status) VALUES ($1, $2, 'reconnect_required')"
        " RETURNING connection_id", account, user_id)
    notice_id = await db.fetchval(
        "INSERT INTO notices (connection_id, user_id, account_id, status, reason, error_code)"
        " VALUES ($1, $2, $3, 'reconnect_required', 'Password reset.', 'AADSTS50173') RETURNING notice_id",
        connection_id, user_id, account)
    notice_event = notices.event_id(notices.ACTION_REQUIRED, str(notice_id))
    await db.execute("INSERT INTO notice_outbox (notice_id, user_id, type, event_id) VALUES ($1, $2, $3, $4)",
                     notice_id, user_id, notices.ACTION_REQUIRED, notice_event)
    tcid, other = [await db.fetchval(
        "INSERT INTO tenant_connections (account_id, tenant_id, status) VALUES ($1, 'contoso.example', 'connected')"
        " RETURNING tenant_connection_id", a) for a in (account, stack.new_account())]
    moved, superseded = [await db.fetchval(
        "INSERT INTO tenant_status_outbox (tenant_connection_id, account_id, tenant_id, status, created_at)"
        " SELECT tenant_connection_id, account_id, tenant_id, status, now() - interval '1 minute'"
        " FROM tenant_connections WHERE tenant_connection_id = $1 RETURNING event_id", t) for t in (tcid, other)]
    async with db.acquire() as conn:  # a later status of `other`, written by this release
        await tenant_status.record(conn, await conn.fetchrow(
            "SELECT tenant_connection_id, account_id, tenant_id, status, reason, error_code FROM tenant_connections"
            " WHERE tenant_connection_id = $1", other))

    await move_legacy_outboxes(db, None, "https://crm.example")  # (the stack's renewer may have moved them first)
    assert await move_legacy_outboxes(db, None, "https://crm.example") == 0
    await wait_until(lambda: db.fetchval(
        "SELECT count(*) = 0 FROM notice_outbox WHERE notice_id = $1 AND published_at IS NULL", notice_id),
        timeout=10, what="the notice moved")
    rows = await db.fetch("SELECT event_id, topic, key, convert_from(value, 'UTF8') AS value FROM outbox"
                          " WHERE event_id = ANY($1::uuid[])", [notice_event, moved, superseded])
    by_id = {str(r["event_id"]): r for r in rows}
    assert set(by_id) == {notice_event, str(moved)}
    notice = json.loads(by_id[notice_event]["value"])
    assert by_id[notice_event]["topic"] == events.NOTICES and by_id[notice_event]["key"] == user_id
    assert notice["type"] == notices.ACTION_REQUIRED and notice["notice_id"] == str(notice_id)
    assert notice["action_url"].endswith("/settings/email") and notice["error_code"] == "AADSTS50173"
    status = json.loads(by_id[str(moved)]["value"])
    assert by_id[str(moved)]["key"] == str(tcid) and status["type"] == "tenant_connection.status"
    assert status["status"] == "connected" and status["event_id"] == str(moved)
    assert await db.fetchval("SELECT count(*) FROM notice_outbox WHERE notice_id = $1 AND published_at IS NULL",
                             notice_id) == 0
    assert await db.fetchval("SELECT count(*) FROM tenant_status_outbox WHERE tenant_connection_id = ANY($1::uuid[])"
                             " AND published_at IS NULL", [tcid, other]) == 0

"""A disconnected connection keeps its status against a failure met by a call already under way when the user
disconnected (a refresh answered invalid_grant, the subscription DELETE answered 401): only a sign-in (or an
enrolment) connects it again. CI once saw `disconnected` flip to `reconnect_required` that way."""

from __future__ import annotations

import pytest

from services.core.application.connections import StatusReporter
from services.core.domain.model import ConnectionStatus
from tests.support.rows import connected_row
from tests.support.stack import Stack

pytestmark = [pytest.mark.asyncio(loop_scope="session"), pytest.mark.integration]


async def test_a_disconnected_connection_takes_only_a_sign_in(stack: Stack, db):
    account = stack.new_account()
    mailbox = await stack.new_mailbox(account, connect=False)
    connection_id = await connected_row(db, account, mailbox.user_id)
    status = StatusReporter(db, stack.publisher, stack.settings.app_url)

    async def current() -> str:
        return str(await db.fetchval("SELECT status FROM mailbox_connections WHERE connection_id = $1::uuid",
                                     connection_id))

    assert await status.set_status(connection_id, ConnectionStatus.DISCONNECTED, "You disconnected.", None)
    # Late failures and a coverage check: nothing changes, no event, no notice.
    assert not await status.set_status(connection_id, ConnectionStatus.RECONNECT_REQUIRED, "Revoked.", "AADSTS50173")
    assert not await status.set_status(connection_id, ConnectionStatus.CONSENT_REQUIRED, "Approval.", "AADSTS65001")
    assert not await status.set_status(connection_id, ConnectionStatus.CONNECTED, None, None)
    assert await current() == "disconnected"
    assert await db.fetchval("SELECT count(*) FROM notices WHERE connection_id = $1::uuid", connection_id) == 0
    # Positive control: the user signs in again.
    assert await status.set_status(connection_id, ConnectionStatus.CONNECTED, None, None, signed_in=True)
    assert await current() == "connected"
    assert await status.set_status(connection_id, ConnectionStatus.RECONNECT_REQUIRED, "Revoked.", "AADSTS50173")
    assert await current() == "reconnect_required"

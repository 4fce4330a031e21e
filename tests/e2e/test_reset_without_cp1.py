"""A password reset noticed by a client that does not declare cp1 (issue 11): Microsoft lets its access
tokens work until they expire, so mailsync notices at the next token refresh (AADSTS50173), which comes at
the latest one access-token lifetime after the reset. Exactly one status event; after reconnecting, every
message sent in between becomes an engagement. The services here run with MAILSYNC_CLIENT_CAPABILITIES=none
on their own Kafka and PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest
import pytest_asyncio

from services.core.adapters.graph.times import parse_graph_time
from tests.e2e.test_fidelity import connection, contact_and_mailbox, polled_again
from tests.support.kafka_caught_up import CaughtUpTail
from tests.support.kafka_tail import Tail
from tests.support.private_infra import private_stack
from tests.support.stack import Stack
from tests.support.wait import wait_until

pytestmark = [pytest.mark.e2e]

TOKEN_LIFETIME_S = 4500  # the sandbox's default, as Microsoft's average (60-90 minutes)
SPEED = 100.0


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def without_cp1() -> AsyncIterator[Stack]:
    async with private_stack("nocp1-", MAILSYNC_CLIENT_CAPABILITIES="none") as (stack, _infra):
        yield stack


async def test_a_reset_during_a_stream_of_mail_without_cp1(without_cp1: Stack):
    stack = without_cp1
    assert stack.pool is not None
    db = stack.pool
    feed = await Tail(stack.env["MAILSYNC_KAFKA_BOOTSTRAP"], "mailsync.engagements.v1").start()
    statuses = await CaughtUpTail(stack.env["MAILSYNC_KAFKA_BOOTSTRAP"], "mailsync.connection-status.v1").start()
    try:
        account, contact, mailbox = await contact_and_mailbox(stack, "stream@client.example")
        control = await stack.new_mailbox(account)
        before = await stack.deliver(mailbox, **{"from": "stream@client.example", "subject": "before"})
        await feed.wait_for(type="engagement.created", internet_message_id=before, timeout=40)
        # Hours in seconds: the access token mailsync holds (75 sandbox minutes) runs out in under a minute.
        await stack.sandbox("POST", "/sandbox/clock", {"speed": SPEED})

        reset_at = await sandbox_now(stack)
        revoked = await stack.sandbox("POST", f"/sandbox/users/{mailbox.graph_id}/revoke",
                                      {"reason": "password_reset"})
        # Without cp1 Microsoft does not revoke access tokens at once: nothing was challenged.
        assert revoked["access_tokens_challenged"] == 0 and revoked["access_tokens_live"] >= 1, revoked
        stream: list[str] = []

        async def noticed() -> bool:  # mail keeps coming while nobody has noticed yet
            # Received "now" on the services' clock: the sped-up sandbox clock runs hours ahead of it, and
            # the reconnect's back-fill window is the services' (real) time.
            stream.append(await stack.deliver(mailbox, **{"from": "stream@client.example",
                                                           "subject": f"stream {len(stream)}",
                                                           "received_at": datetime.now(UTC).isoformat()}))
            return (await connection(stack, mailbox.user_id))["status"] == "reconnect_required"

        await wait_until(noticed, timeout=120, interval=0.5, what="the reset noticed")
        noticed_after = (await sandbox_now(stack) - reset_at).total_seconds()
        view = await connection(stack, mailbox.user_id)
        assert view["error_code"] == "AADSTS50173" and "password" in view["reason"]
        # At the latest when the access token held at the reset expired (plus the real seconds a delivery and
        # a fetch take, at this speed).
        assert noticed_after <= TOKEN_LIFETIME_S + 3 * SPEED, noticed_after

        for _ in range(2):  # the renewer's loops go round; the status stays, no second event
            await polled_again(stack, db, control)
        assert (await connection(stack, mailbox.user_id))["status"] == "reconnect_required"
        await statuses.caught_up()
        changes = [e for e in statuses.matching(connection_id=mailbox.connection_id) if e["status"] != "connected"]
        assert len(changes) == 1, changes

        await stack.connect(mailbox)
        for imid in stream:
            event = await feed.wait_for(type="engagement.created", internet_message_id=imid, timeout=90)
            assert event["contact_ids"] == [contact]
        print(f"\nreset without cp1: noticed {noticed_after / 60:.0f} sandbox minutes after the reset; "
              f"{len(stream)} messages of the stream imported after reconnecting")
    finally:
        await feed.stop()
        await statuses.stop()


async def sandbox_now(stack: Stack) -> datetime:
    return parse_graph_time(str((await stack.sandbox("GET", "/sandbox/clock"))["now"]))

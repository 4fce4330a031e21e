"""The services against a sandbox that behaves like Microsoft (issue 11): password reset with cp1 claims
challenges, Conditional Access, and $batch's documented variants (a whole-batch 424, lower-case step
headers)."""

from __future__ import annotations

import itertools
import uuid
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

import pytest
import pytest_asyncio
from prometheus_client import REGISTRY

from services.core.adapters.graph.client import GraphClient
from services.core.adapters.graph.errors import CONDITIONAL_ACCESS_REASON, DeltaExpired, GraphError
from services.core.adapters.graph.times import parse_graph_time
from services.core.adapters.store.mailbox.upkeep import ConnectionUpkeep
from tests.support.kafka_caught_up import CaughtUpTail
from tests.support.private_infra import private_stack
from tests.support.stack import Mailbox, Stack, quiet
from tests.support.wait import wait_until

pytestmark = [pytest.mark.e2e]


async def connection(stack: Stack, user_id: str) -> dict[str, Any]:
    status, view = await stack.api("GET", f"/api/v1/users/{user_id}/connection")
    assert status == 200, view
    return dict(view)


async def contact_and_mailbox(stack: Stack, address: str) -> tuple[str, str, Mailbox]:
    account = stack.new_account()
    contact = await stack.add_contact(account, address)
    await stack.wait_contact(contact)
    return account, contact, await stack.new_mailbox(account)


async def status_becomes(stack: Stack, mailbox: Mailbox, status: str, timeout: float = 30) -> dict[str, Any]:
    async def reached() -> dict[str, Any] | None:
        view = await connection(stack, mailbox.user_id)
        return view if view["status"] == status else None

    return await wait_until(reached, timeout=timeout, what=f"connection {status}")


async def polled_again(stack: Stack, db: Any, mailbox: Mailbox) -> None:
    """Evidence that the renewer's loops went round: a poll of `mailbox` asked for now has run."""
    before = await db.fetchval("SELECT last_polled_at FROM mailbox_connections WHERE connection_id = $1::uuid",
                               mailbox.connection_id)
    status, _ = await stack.api("POST", f"/api/v1/connections/{mailbox.connection_id}/sync")
    assert status == 202

    async def ran() -> bool:
        now = await db.fetchval("SELECT last_polled_at FROM mailbox_connections WHERE connection_id = $1::uuid",
                                mailbox.connection_id)
        return now is not None and (before is None or now > before)

    await wait_until(ran, timeout=40, what="a poll of the control mailbox")


async def test_password_reset_with_cp1_is_noticed_in_seconds_with_one_status_event(stack: Stack, db,
                                                                                  engagements_tail):
    """Microsoft's sequence: the refresh token fails (AADSTS50173), the user's subscriptions are removed
    (subscriptionRemoved), and, because mailsync declares cp1, its access tokens are challenged at once.
    The recreate after subscriptionRemoved meets the challenge, refreshes with the claims, and that refresh
    decides: reconnect_required within seconds (a 75-minute token has not expired), one status event, no
    recreate loop; after reconnecting, every message sent in between becomes an engagement."""
    tail = await CaughtUpTail(stack.env["MAILSYNC_KAFKA_BOOTSTRAP"], "mailsync.connection-status.v1").start()
    try:
        account, contact, mailbox = await contact_and_mailbox(stack, "reset@client.example")
        control = await stack.new_mailbox(account)
        before = await stack.deliver(mailbox, **{"from": "reset@client.example", "subject": "before"})
        await engagements_tail.wait_for(type="engagement.created", internet_message_id=before, timeout=40)

        revoked = await stack.sandbox("POST", f"/sandbox/users/{mailbox.graph_id}/revoke",
                                      {"reason": "password_reset"})
        assert revoked["subscriptions_removed"], revoked
        assert revoked["access_tokens_challenged"] >= 1, revoked  # mailsync's tokens carry cp1
        between = [await stack.deliver(mailbox, **{"from": "reset@client.example", "subject": f"between {i}"})
                   for i in range(3)]

        view = await status_becomes(stack, mailbox, "reconnect_required")
        assert view["error_code"] == "AADSTS50173" and "password" in view["reason"]
        marker = await tail.wait_for(connection_id=mailbox.connection_id, status="reconnect_required")

        # The renewer's loops go round a few times; nothing recreates the subscription or changes the status.
        for _ in range(3):
            await polled_again(stack, db, control)
        live = (await stack.sandbox("GET", "/sandbox/subscriptions"))["value"]
        assert not [s for s in live if s["userId"] == mailbox.graph_id]
        assert not await db.fetchval("SELECT count(*) FROM subscriptions WHERE connection_id = $1::uuid",
                                     mailbox.connection_id)
        assert (await connection(stack, mailbox.user_id))["status"] == "reconnect_required"
        await tail.caught_up()
        changes = [e for e in tail.matching(connection_id=mailbox.connection_id) if e["status"] != "connected"]
        assert [e["event_id"] for e in changes] == [marker["event_id"]]
        assert await db.fetchval(
            "SELECT count(*) FROM connection_events WHERE connection_id = $1::uuid AND status <> 'connected'",
            mailbox.connection_id) == 1

        await stack.connect(mailbox)
        for imid in between:
            event = await engagements_tail.wait_for(type="engagement.created", internet_message_id=imid, timeout=60)
            assert event["contact_ids"] == [contact]
    finally:
        await tail.stop()


async def test_conditional_access_block_is_reconnect_required_with_the_policy_reason(stack: Stack,
                                                                                    engagements_tail):
    """Graph answers mailsync's cp1 tokens 403 insufficient_claims; the refresh with the claims is refused
    with AADSTS53003: reconnect_required with the policy reason, not a permanent error that leaves the
    mailbox connected. Lifting the block and reconnecting heals it and imports what arrived meanwhile."""
    _account, contact, mailbox = await contact_and_mailbox(stack, "policy@client.example")
    await stack.sandbox("POST", f"/sandbox/tenants/{mailbox.tenant_id}/policy", {"conditional_access_block": True})
    try:
        blocked = await stack.deliver(mailbox, **{"from": "policy@client.example", "subject": "while blocked"})
        view = await status_becomes(stack, mailbox, "reconnect_required")
        assert view["error_code"] == "AADSTS53003"
        assert view["reason"] == CONDITIONAL_ACCESS_REASON
    finally:
        await stack.sandbox("POST", f"/sandbox/tenants/{mailbox.tenant_id}/policy",
                            {"conditional_access_block": False})
    await stack.connect(mailbox)
    assert (await connection(stack, mailbox.user_id))["status"] == "connected"
    event = await engagements_tail.wait_for(type="engagement.created", internet_message_id=blocked, timeout=60)
    assert event["contact_ids"] == [contact]


async def _graph_token(stack: Stack, mailbox: Mailbox) -> str:
    issued = await stack.sandbox("POST", "/sandbox/tokens", {"user_id": mailbox.graph_id,
                                                             "scopes": ["Mail.Read", "User.Read"]})
    return str(issued["access_token"])


async def test_a_whole_batch_424_is_retried_per_step_with_lower_case_step_headers(stack: Stack):
    """Integration with the sandbox's documented $batch variants: any throttled step makes the whole batch
    a 424 (its Retry-After on the envelope, steps inside), and step headers come in lower case."""
    mailbox = await stack.new_mailbox(stack.new_account(), connect=False)
    token, user = await _graph_token(stack, mailbox), mailbox.graph_id
    urls = [f"/users/{user}/mailFolders/{name}" for name in ("inbox", "sentitems", "drafts", "junkemail",
                                                             "deleteditems", "archive")]
    urls.append(f"/users/{user}/mailFolders/no-such-folder")  # a step that fails for good
    await stack.sandbox("POST", "/sandbox/faults", {"throttle": {"concurrent": 1}, "graph_latency_ms": 50,
                                                    "batch_424": True, "batch_lowercase_headers": True})
    refused_before = _batches_refused()
    try:
        assert stack.http is not None
        graph = GraphClient(stack.http, stack.env["MAILSYNC_GRAPH_URL"])
        results = await graph.batch_get(token, user, urls)
    finally:
        await stack.sandbox("POST", "/sandbox/faults", {"reset": True})
    assert all(isinstance(r, dict) and r.get("id") for r in results[:6]), results
    assert isinstance(results[6], GraphError) and not results[6].transient  # reported, not retried
    stats = (await stack.sandbox("GET", "/sandbox/stats"))["mailboxes"][user]
    assert stats["throttled"] > 0 and stats["early_retries"] == 0
    assert _batches_refused() > refused_before  # the variant was met: whole batches answered 424


def _batches_refused() -> float:
    """424 answers this process's Graph client received (its Prometheus counter)."""
    return REGISTRY.get_sample_value("mailsync_graph_requests_total", {"status": "424"}) or 0.0


async def test_an_expired_delta_link_in_a_batch_step_carries_its_lower_case_location(stack: Stack):
    mailbox = await stack.new_mailbox(stack.new_account(), connect=False)
    token, user = await _graph_token(stack, mailbox), mailbox.graph_id
    assert stack.http is not None
    graph = GraphClient(stack.http, stack.env["MAILSYNC_GRAPH_URL"])
    first = await graph.get_page(token, user, f"/users/{user}/mailFolders/inbox/messages/delta?$select=id")
    delta_link = str(first["@odata.deltaLink"])
    await stack.sandbox("POST", "/sandbox/faults", {"expire_delta_tokens": True, "batch_lowercase_headers": True})
    try:
        (result,) = await graph.batch_get(token, user, [delta_link])
    finally:
        await stack.sandbox("POST", "/sandbox/faults", {"reset": True})
    assert isinstance(result, DeltaExpired), result
    assert isinstance(result, GraphError) and not result.transient
    assert result.location and "/messages/delta" in result.location  # read from the lower-case `location`


# --- Graph's own reauthorizationRequired, hours of it, on a private stack whose sandbox clock runs fast ----
# (a sped-up clock never goes back: the shared sandbox would stay hours ahead for every later test).

SPEED = 180.0  # a sandbox hour in 20 real seconds
SIMULATED_HOURS = 4


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def fast_clock() -> AsyncIterator[Stack]:
    async with private_stack("clock-") as (stack, _infra):
        yield stack


async def _sandbox_now(stack: Stack) -> datetime:
    clock = await stack.sandbox("GET", "/sandbox/clock")
    return parse_graph_time(str(clock["now"]))


async def _counts(stack: Stack, mailbox: Mailbox) -> dict[str, Any]:
    return dict((await stack.sandbox("GET", "/sandbox/stats"))["mailboxes"][mailbox.graph_id])


async def test_graphs_own_reauthorizations_cost_one_patch_each_and_no_catch_up_poll(fast_clock: Stack):
    """An idle connected mailbox over four simulated hours: Graph sends reauthorizationRequired by itself
    as each token the subscription holds nears expiry; each is answered by one PATCH with a newer token, and
    since the authorization never lapsed no catch-up poll runs. At most 4 Graph requests per hour."""
    stack = fast_clock
    assert stack.pool is not None
    db = stack.pool
    mailbox = await stack.new_mailbox(stack.new_account())
    # The hourly poll is the services' own clock's business: keep it out of what is measured.
    await quiet(stack, db, mailbox)
    await stack.sandbox("POST", "/sandbox/clock", {"speed": SPEED})

    # The subscription made at connect time has no recorded authorization: its first reminder may catch up.
    async def first_answered() -> bool:
        counts = await _counts(stack, mailbox)
        authorized = await db.fetchval("SELECT authorized_until IS NOT NULL FROM subscriptions"
                                       " WHERE connection_id = $1::uuid", mailbox.connection_id)
        return counts["lifecycle"]["spontaneous"] >= 1 and counts["subscription_renewals"] >= 1 and bool(authorized)

    await wait_until(first_answered, timeout=90, what="Graph's first reauthorizationRequired answered")

    async def settled() -> dict[str, Any] | None:
        """No lifecycle work in flight: every reminder so far answered, no poll due or running."""
        counts = await _counts(stack, mailbox)
        polling = await db.fetchval("SELECT poll_lease_until IS NOT NULL OR next_poll_at <= now()"
                                    " FROM mailbox_connections WHERE connection_id = $1::uuid", mailbox.connection_id)
        answered = counts["subscription_renewals"] >= counts["lifecycle"]["spontaneous"]
        return counts if answered and not polling else None

    base = await wait_until(settled, timeout=30, what="the first reminder's work settled")
    await db.execute("UPDATE mailbox_connections SET next_poll_at = now() + interval '1 day'"
                     " WHERE connection_id = $1::uuid", mailbox.connection_id)
    start = await _sandbox_now(stack)

    async def hours_passed() -> bool:
        return (await _sandbox_now(stack) - start).total_seconds() >= SIMULATED_HOURS * 3600

    await wait_until(hours_passed, timeout=SIMULATED_HOURS * 3600 / SPEED + 60, interval=0.5,
                     what=f"{SIMULATED_HOURS} simulated hours")
    after = await wait_until(settled, timeout=30, what="the last reminder's work settled")
    hours = (await _sandbox_now(stack) - start).total_seconds() / 3600

    reminders = after["lifecycle"]["spontaneous"] - base["lifecycle"]["spontaneous"]
    patches = after["subscription_renewals"] - base["subscription_renewals"]
    assert reminders >= SIMULATED_HOURS, after  # Graph did keep asking (every 15-45 minutes)
    assert patches == reminders, (patches, reminders)  # each answered with exactly one PATCH
    assert after["delta_requests"] == base["delta_requests"], "a catch-up poll ran though nothing was missed"
    assert after["requests"] - base["requests"] <= 4 * hours, (after["requests"] - base["requests"], hours)
    assert after["notifications"]["dropped"] == base["notifications"]["dropped"]  # delivery never paused
    live = (await stack.sandbox("GET", "/sandbox/subscriptions"))["value"]
    (sub,) = [s for s in live if s["userId"] == mailbox.graph_id]
    assert not sub["paused"]
    assert await db.fetchval("SELECT reauth_failed_at IS NULL FROM subscriptions WHERE subscription_id = $1",
                             sub["id"])


async def test_failed_subscription_creates_back_off(stack: Stack, db):
    """The bookkeeping behind ensure_subscriptions' back-off, on the real schema: the first failure is retried
    at once, then 30 s, 90 s, ... at most an hour; a disconnected row so no renewer touches it meanwhile."""
    connection_id = await db.fetchval(
        "INSERT INTO mailbox_connections (account_id, user_id, status) VALUES ($1, $2, 'disconnected')"
        " RETURNING connection_id::text", stack.new_account(), f"backoff-{uuid.uuid4().hex[:10]}")
    waits = []
    for _ in range(13):
        await ConnectionUpkeep(db).subscribe_failed(connection_id)
        waits.append(await db.fetchval("SELECT extract(epoch FROM subscribe_retry_at - now()) FROM mailbox_connections"
                                       " WHERE connection_id = $1::uuid", connection_id))
    assert waits[0] <= 1 and 29 <= waits[1] <= 31 and 89 <= waits[2] <= 91
    assert all(later >= earlier - 1 for earlier, later in itertools.pairwise(waits))
    assert 3599 <= waits[-1] <= 3601
    assert await db.fetchval("SELECT subscribe_failures FROM mailbox_connections WHERE connection_id = $1::uuid",
                             connection_id) == 13

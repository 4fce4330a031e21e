"""Disconnect stops mailsync's access even when Microsoft refuses the subscription DELETE (issue 10,
finding 4): tokens wiped and status `disconnected` first, in one transaction; subscriptions Graph did not
delete stay visible as pending, are never trusted nor renewed, and the renewer clears them."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from services.core.domain import events
from tests.support.kafka_tail import Tail, partition_count
from tests.support.stack import Mailbox, Stack
from tests.support.wait import wait_until

pytestmark = [pytest.mark.e2e]


async def live_subscriptions(stack: Stack, mailbox: Mailbox) -> list[dict[str, Any]]:
    subs = await stack.sandbox("GET", "/sandbox/subscriptions")
    items = subs["value"] if isinstance(subs, dict) else subs
    return [s for s in items if mailbox.graph_id in s["resource"]]


async def revoke_grant(stack: Stack, mailbox: Mailbox) -> None:
    """The grant is revoked at Microsoft (a critical CAE event): mailsync's access token, issued with the
    cp1 capability, is challenged from now on (every call, the subscription DELETE included, answers 401)
    and its refresh token refused. Unlike a password reset, Outlook keeps the subscription."""
    answer = await stack.sandbox("POST", f"/sandbox/users/{mailbox.graph_id}/revoke", {"reason": "mfa_required"})
    assert answer["access_tokens_challenged"] >= 1 and not answer.get("subscriptions_removed"), answer


async def view(stack: Stack, mailbox: Mailbox) -> dict[str, Any]:
    status, body = await stack.api("GET", f"/api/v1/users/{mailbox.user_id}/connection")
    assert status == 200, body
    return body


async def stored(stack: Stack, mailbox: Mailbox) -> dict[str, Any]:
    assert stack.pool is not None
    row = await stack.pool.fetchrow(
        "SELECT status, access_token_enc, refresh_token_enc, access_expires_at, updated_at, status_changed_at"
        " FROM mailbox_connections WHERE connection_id = $1::uuid", mailbox.connection_id)
    return dict(row)


def notification(sub: dict[str, Any], message_id: str) -> dict[str, Any]:
    resource = f"Users/{sub['userId']}/Messages/{message_id}"
    return {"subscriptionId": sub["id"], "subscriptionExpirationDateTime": sub["expirationDateTime"],
            "clientState": sub["clientState"], "changeType": "created", "resource": resource,
            "tenantId": sub.get("tenantId", ""),
            "resourceData": {"@odata.type": "#Microsoft.Graph.Message", "@odata.id": resource,
                             "@odata.etag": 'W/"x"', "id": message_id}}


async def post_notifications(stack: Stack, items: list[dict[str, Any]]) -> None:
    assert stack.http is not None
    async with stack.http.post(f"{stack.api_url}/graph/notifications", json={"value": items}) as resp:
        assert resp.status == 202, await resp.text()


async def published_by(stack: Stack, topic: str, action: Callable[[], Awaitable[None]]) -> list[dict[str, Any]]:
    """Every record `action` caused on `topic`: read from the end offsets before it to the end offsets after it
    (the webhook answers only after Kafka acknowledged, so nothing it accepted can arrive later)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=stack.env["MAILSYNC_KAFKA_BOOTSTRAP"], enable_auto_commit=False,
                                isolation_level="read_committed")
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(partition_count(topic))]
        consumer.assign(tps)
        start = await consumer.end_offsets(tps)
        await action()
        end = await consumer.end_offsets(tps)
        for tp in tps:
            consumer.seek(tp, start[tp])
        found: list[dict[str, Any]] = []
        while any([await consumer.position(tp) < end[tp] for tp in tps]):
            for records in (await consumer.getmany(*tps, timeout_ms=500)).values():
                found += [events.decode(r.value) for r in records if r.offset < end[TopicPartition(topic, r.partition)]]
        return found
    finally:
        await consumer.stop()


async def test_disconnect_after_consent_revoked_wipes_tokens_first_and_the_renewer_clears_the_rest(
        stack: Stack, db):
    account = stack.new_account()
    mailbox = await stack.new_mailbox(account)
    control = await stack.new_mailbox(account)  # a live subscription: the positive control of the webhook
    (sub,) = await live_subscriptions(stack, mailbox)
    (control_sub,) = await live_subscriptions(stack, control)
    status_tail = await Tail(stack.env["MAILSYNC_KAFKA_BOOTSTRAP"], events.CONNECTION_STATUS).start()
    try:
        # Positive control: while the subscription is live its notifications are accepted (and the webhook's
        # trust cache now holds it).
        live_id = f"live-{uuid.uuid4().hex}"
        records = await published_by(stack, events.NOTIFICATIONS, lambda: post_notifications(stack, [
            notification(sub, live_id)]))
        assert live_id in [r.get("message_id") for r in records]

        # Microsoft revokes mailsync's grant: the subscription DELETE now answers 401.
        await revoke_grant(stack, mailbox)

        # Watch the row while the disconnect runs: it is `disconnected` exactly when the tokens are gone.
        seen: list[tuple[str, bool]] = []
        done = asyncio.Event()

        async def watch() -> None:
            while not done.is_set():
                row = await stored(stack, mailbox)
                seen.append((row["status"], row["access_token_enc"] is not None))
                await asyncio.sleep(0.002)

        watcher = asyncio.create_task(watch())
        try:
            status, body = await stack.api("POST", f"/api/v1/connections/{mailbox.connection_id}/disconnect")
        finally:
            done.set()
            await watcher
        assert status == 200, body
        # (A Graph call meeting the revocation first may have made it reconnect_required: tokens are kept then.)
        assert seen and all((status_ == "disconnected") != has_token for status_, has_token in seen), set(seen)

        row = await stored(stack, mailbox)
        assert row["status"] == "disconnected"
        assert row["access_token_enc"] is None and row["refresh_token_enc"] is None and row["access_expires_at"] is None
        # The wipe and the status change are one transaction: both carry the transaction's now().
        assert row["updated_at"] == row["status_changed_at"]
        event_at = await db.fetchval("SELECT max(at) FROM connection_events WHERE connection_id = $1::uuid"
                                     " AND status = 'disconnected'", mailbox.connection_id)
        assert event_at == row["status_changed_at"]
        await status_tail.wait_for(connection_id=mailbox.connection_id, status="disconnected")

        # Graph refused the DELETE: the subscription is still live there, and visible as pending here.
        assert [s["id"] for s in await live_subscriptions(stack, mailbox)] == [sub["id"]]
        assert body["status"] == "disconnected" and body["subscriptions"] == []
        assert body["subscriptions_pending_delete"] == 1
        (pending,) = body["pending_deletions"]
        assert pending["id"] == sub["id"] and pending["attempts"] == 1 and pending["last_error"]
        assert await db.fetchval("SELECT count(*) FROM subscriptions WHERE connection_id = $1::uuid",
                                 mailbox.connection_id) == 0  # nothing left for the renewer to renew

        # A notification for the pending subscription, with its genuine clientState, is not accepted; one for
        # a live subscription in the same POST is (positive control).
        pending_id, control_id = f"pending-{uuid.uuid4().hex}", f"control-{uuid.uuid4().hex}"

        records = await published_by(stack, events.NOTIFICATIONS, lambda: post_notifications(stack, [
            notification(sub, pending_id), notification(control_sub, control_id)]))
        message_ids = [r.get("message_id") for r in records]
        assert control_id in message_ids and pending_id not in message_ids, json.dumps(records)[:2000]

        # The user connects again: with the new grant the renewer deletes the old subscription at Graph.
        await stack.connect(mailbox)

        async def cleared() -> dict[str, Any] | None:
            current = await view(stack, mailbox)
            live = {s["id"] for s in await live_subscriptions(stack, mailbox)}
            done_ = current["subscriptions_pending_delete"] == 0 and sub["id"] not in live
            return current if done_ else None

        current = await wait_until(cleared, timeout=60, what="the pending subscription deleted by the renewer")
        assert current["status"] == "connected" and len(current["subscriptions"]) == 1
        assert current["subscriptions"][0]["id"] != sub["id"]
    finally:
        await status_tail.stop()


async def test_a_pending_deletion_past_its_expiry_is_forgotten(stack: Stack, db):
    mailbox = await stack.new_mailbox(stack.new_account())
    (sub,) = await live_subscriptions(stack, mailbox)
    await revoke_grant(stack, mailbox)
    status, body = await stack.api("POST", f"/api/v1/connections/{mailbox.connection_id}/disconnect")
    assert status == 200 and body["subscriptions_pending_delete"] == 1, body
    # Nothing can delete it (no grant): it stays pending, visible, while it lives at Graph ...
    current = await view(stack, mailbox)
    assert current["subscriptions_pending_delete"] == 1 and current["status"] == "disconnected"
    # ... until it expires there. Graph drops it; our record of its expiry is moved to now (the 3 days
    # a subscription lives, passed).
    await stack.sandbox("POST", f"/sandbox/subscriptions/{sub['id']}/expire")
    await db.execute("UPDATE subscription_deletions SET expires_at = now() WHERE subscription_id = $1", sub["id"])

    async def forgotten() -> bool:
        return (await view(stack, mailbox))["subscriptions_pending_delete"] == 0

    await wait_until(forgotten, timeout=30, what="the expired pending deletion forgotten")
    assert (await stored(stack, mailbox))["access_token_enc"] is None


async def test_a_normal_disconnect_deletes_the_subscription_at_graph(stack: Stack, db):
    """Positive control: with consent in place, the DELETE succeeds and nothing stays pending."""
    mailbox = await stack.new_mailbox(stack.new_account())
    assert len(await live_subscriptions(stack, mailbox)) == 1
    status, body = await stack.api("POST", f"/api/v1/connections/{mailbox.connection_id}/disconnect")
    assert status == 200, body
    assert body["status"] == "disconnected" and body["subscriptions"] == []
    assert body["subscriptions_pending_delete"] == 0 and body["pending_deletions"] == []
    assert await live_subscriptions(stack, mailbox) == []
    row = await stored(stack, mailbox)
    assert row["access_token_enc"] is None and row["refresh_token_enc"] is None
    assert await db.fetchval("SELECT count(*) FROM subscription_deletions WHERE connection_id = $1::uuid",
                             mailbox.connection_id) == 0


async def test_tokens_a_refresh_stored_after_the_disconnect_are_wiped(stack: Stack, db):
    """A token refresh in flight when the user disconnected may store fresh tokens on the disconnected row;
    the renewer wipes them. A reconnect in progress (tokens just stored, `connected` a moment later) is left
    alone: the positive control, written in the same instant, keeps its tokens through the same pass."""
    account = stack.new_account()
    stray, fresh = await stack.new_mailbox(account), await stack.new_mailbox(account)
    for mailbox in (stray, fresh):
        status, body = await stack.api("POST", f"/api/v1/connections/{mailbox.connection_id}/disconnect")
        assert status == 200 and body["status"] == "disconnected", body
    await db.execute(
        """UPDATE mailbox_connections SET access_token_enc = 'v1.k1.stray'::bytea,
                  refresh_token_enc = 'v1.k1.stray'::bytea, access_expires_at = now() + interval '1 hour',
                  updated_at = CASE WHEN connection_id = $1::uuid THEN now() - interval '11 minutes' ELSE now() END
            WHERE connection_id = ANY($2::uuid[])""", stray.connection_id, [stray.connection_id, fresh.connection_id])

    async def wiped() -> bool:
        return (await stored(stack, stray))["refresh_token_enc"] is None

    await wait_until(wiped, timeout=30, what="the stray tokens wiped")
    assert (await stored(stack, stray))["access_token_enc"] is None
    assert (await stored(stack, fresh))["refresh_token_enc"] is not None

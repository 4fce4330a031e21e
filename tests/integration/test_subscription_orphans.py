"""A POST /subscriptions that times out may still have created the subscription at Graph: it is adopted,
never duplicated, and stray ones we do not know are deleted (issue 10, finding 6)."""

from __future__ import annotations

import secrets

import pytest

from services.core.adapters.graph.client import GraphClient
from services.core.adapters.tls import client_session
from services.core.application.subscriptions import expiry_iso, post_subscription
from tests.integration.sandbox_support import CA_FILE, Env, env, servers
from tests.support.wait import wait_until

pytestmark = pytest.mark.asyncio(loop_scope="session")
__all__ = ["env", "servers"]


def _body(env: Env, user_id: str) -> dict:
    return {"changeType": "created,updated,deleted", "notificationUrl": f"{env.receiver.url}/notify",
            "lifecycleNotificationUrl": f"{env.receiver.url}/lifecycle", "resource": f"/users/{user_id}/messages",
            "expirationDateTime": expiry_iso(600), "clientState": secrets.token_urlsafe(32)}


async def _live(env: Env, user_id: str) -> list[dict]:
    return [s for s in (await env.control("GET", "/sandbox/subscriptions"))["value"] if s["userId"] == user_id]


async def test_a_timed_out_create_is_adopted_not_duplicated(env: Env, db):
    box = await env.mailbox()
    token = await env.token(box["user_id"])
    env.receiver.validation_delays.append(0.5)  # Graph holds the POST open while it validates the URL
    async with client_session(CA_FILE()) as session:
        graph = GraphClient(session, f"{env.url}/v1.0", timeout_s=0.3)
        body = _body(env, box["user_id"])
        created = await post_subscription(db, graph, token, box["user_id"], body)
        # The first attempt's subscription exists at Graph: it is the one handed back, and the only one.
        live = await wait_until(lambda: _live(env, box["user_id"]), what="the subscription at the sandbox")
        await env.settled()
        live = await _live(env, box["user_id"])
        assert [s["id"] for s in live] == [created["id"]]
        assert live[0]["clientState"] == body["clientState"]


async def test_a_stray_subscription_nobody_knows_is_deleted_before_trying_again(env: Env, db):
    box = await env.mailbox()
    token = await env.token(box["user_id"])
    async with client_session(CA_FILE()) as session:
        patient = GraphClient(session, f"{env.url}/v1.0")
        stray = await patient.create_subscription(token, box["user_id"], _body(env, box["user_id"]))
        env.receiver.validation_delays.append(0.5)
        hasty = GraphClient(session, f"{env.url}/v1.0", timeout_s=0.3)
        created = await post_subscription(db, hasty, token, box["user_id"], _body(env, box["user_id"]))
    await env.settled()
    ids = [s["id"] for s in await _live(env, box["user_id"])]
    assert stray["id"] not in ids and created["id"] in ids and len(ids) == 1

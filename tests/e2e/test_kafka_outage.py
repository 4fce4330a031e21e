"""The webhook answers 202 only when Kafka took the notification; with the broker gone it answers 5xx."""

from __future__ import annotations

import secrets
import uuid

import aiohttp
import pytest

from tests.support.own_kafka import PrivateKafka
from tests.support.procs import MAILSYNC, Proc, free_port
from tests.support.stack import Stack
from tests.support.wait import wait_until

pytestmark = [pytest.mark.e2e]


def _body(subscription_id: str, client_state: str, tenant: str) -> dict:
    message_id = str(uuid.uuid4())
    resource = f"Users/u/Messages/{message_id}"
    return {"value": [{"subscriptionId": subscription_id, "clientState": client_state, "changeType": "created",
                       "resource": resource, "tenantId": tenant,
                       "resourceData": {"@odata.type": "#Microsoft.Graph.Message", "id": message_id}}]}


async def test_broker_killed_means_503_not_202(stack: Stack, db):
    kafka = PrivateKafka().start()
    subscriber = None
    try:
        env = {**stack.env, "MAILSYNC_KAFKA_BOOTSTRAP": kafka.bootstrap}
        assert Proc("topics-private", [*MAILSYNC, "topics"], env).popen.wait(60) == 0
        port = free_port()
        subscriber = Proc("subscriber-private", [*MAILSYNC, "subscriber"],
                          {**env, "MAILSYNC_HTTP_PORT": str(port), "MAILSYNC_HTTPS_PORT": str(free_port())})
        subscriber.wait_http_ok(f"http://127.0.0.1:{port}/readyz")

        account, tenant, client_state = stack.new_account(), str(uuid.uuid4()), secrets.token_urlsafe(32)
        connection_id = await db.fetchval(
            "INSERT INTO mailbox_connections (account_id, user_id, status) VALUES ($1, $2, 'connected')"
            " RETURNING connection_id", account, f"user-{uuid.uuid4().hex[:8]}")
        subscription_id = str(uuid.uuid4())
        await db.execute(
            "INSERT INTO subscriptions (subscription_id, connection_id, account_id, tenant_id, resource, client_state,"
            " expires_at) VALUES ($1, $2, $3, $4, '/users/u/messages', $5, now() + interval '1 day')",
            subscription_id, connection_id, account, tenant, client_state)

        url = f"http://127.0.0.1:{port}/graph/notifications"
        async with aiohttp.ClientSession() as http:
            async with http.post(url, json=_body(subscription_id, client_state, tenant)) as resp:
                assert resp.status == 202
            kafka.kill()
            async with http.post(url, json=_body(subscription_id, client_state, tenant),
                                 timeout=aiohttp.ClientTimeout(total=10)) as resp:
                assert resp.status == 503
                assert resp.headers.get("Retry-After")
                assert (await resp.json())["error"]["code"] == "unavailable"

            async def unready() -> bool:
                async with http.get(f"http://127.0.0.1:{port}/readyz") as resp:
                    return resp.status == 503

            await wait_until(unready, what="/readyz reporting Kafka unreachable")
    finally:
        if subscriber is not None:
            subscriber.stop()
        kafka.close()

"""Subscriptions, the validation handshake and notification delivery, against a real receiver."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tests.integration.sandbox_support import Env, env, servers
from tests.support.wait import wait_until

pytestmark = pytest.mark.asyncio(loop_scope="session")
__all__ = ["env", "servers"]


def expiry(minutes: float) -> str:
    return (datetime.now(UTC) + timedelta(minutes=minutes)).strftime("%Y-%m-%dT%H:%M:%S.%f0Z")


def parse(value: str) -> datetime:
    head, _, tail = value.replace("Z", "").partition(".")
    return datetime.fromisoformat(f"{head}.{tail[:6]}").replace(tzinfo=UTC)


async def subscribe(env: Env, token: str, *, resource: str = "/me/messages", expect: int = 201,
                    **extra: Any) -> dict[str, Any]:
    body = {"changeType": "created,updated,deleted", "notificationUrl": f"{env.receiver.url}/notify",
            "lifecycleNotificationUrl": f"{env.receiver.url}/lifecycle", "resource": resource,
            "expirationDateTime": expiry(60), "clientState": "secret-state", "latestSupportedTlsVersion": "v1_2",
            **extra}
    status, created, _ = await env.graph("POST", "/subscriptions", token, body=body)
    assert status == expect, created
    return created


async def received(env: Env, count: int, *, lifecycle: bool = False) -> list[dict[str, Any]]:
    async def enough() -> list[dict[str, Any]] | None:
        posts = env.receiver.lifecycle_posts if lifecycle else env.receiver.posts
        items = [item for post in posts for item in post["value"]]
        return items if len(items) >= count else None
    return await wait_until(enough, timeout=5, interval=0.02, what=f"{count} notifications")


async def test_subscription_is_validated_and_returned_as_graph_does(env: Env):
    box = await env.mailbox()
    token = await env.token(box["user_id"])
    created = await subscribe(env, token)
    assert len(env.receiver.validations) == 2  # notification and lifecycle URLs
    assert all(v.startswith("Validation: ") and "+&=%/?#" in v for v in env.receiver.validations)
    assert {"id", "resource", "applicationId", "changeType", "clientState", "notificationUrl",
            "lifecycleNotificationUrl", "expirationDateTime", "creatorId", "latestSupportedTlsVersion"} <= set(created)
    assert created["resource"] == "/me/messages" and created["creatorId"] == box["user_id"]
    assert created["changeType"] == "created,updated,deleted" and created["clientState"] == "secret-state"
    assert abs((parse(created["expirationDateTime"]) - datetime.now(UTC)).total_seconds() - 3600) < 60
    listed = await env.control("GET", "/sandbox/subscriptions")
    assert [(s["id"], s["tenantId"]) for s in listed["value"]] == [(created["id"], box["tenant_id"])]
    status, mine, _ = await env.graph("GET", "/subscriptions", token)
    assert status == 200 and [s["id"] for s in mine["value"]] == [created["id"]]


@pytest.mark.parametrize("validation", ["wrong", "status500", "json"])
async def test_a_failed_handshake_fails_the_create(env: Env, validation: str):
    box = await env.mailbox()
    env.receiver.validation = validation
    failed = await subscribe(env, await env.token(box["user_id"]), expect=400)
    assert failed["error"]["code"] == "InvalidRequest"
    assert failed["error"]["message"].startswith("Subscription validation request failed.")
    assert (await env.control("GET", "/sandbox/subscriptions"))["value"] == []


async def test_create_checks_its_fields(env: Env):
    box, other = await env.mailbox(), await env.mailbox()
    token = await env.token(box["user_id"])
    bad = await subscribe(env, token, expect=400, clientState="x" * 129)
    assert bad["error"]["code"] == "InvalidRequest"
    too_long = await subscribe(env, token, expect=400, expirationDateTime=expiry(10_090))
    assert too_long["error"] == {**too_long["error"], "code": "ExtensionError",
                                 "message": "Subscription expiration can only be 10080 minutes in the future."}
    short = await subscribe(env, token, expirationDateTime=expiry(10))
    assert (parse(short["expirationDateTime"]) - datetime.now(UTC)).total_seconds() >= 45 * 60 - 5
    await subscribe(env, token, expect=403, resource=f"/users/{other['user_id']}/messages")
    await subscribe(env, token, expect=400, changeType="created,moved")
    await subscribe(env, token, resource=f"/users/{box['user_id']}/mailFolders('Inbox')/messages")


async def test_notification_body_is_exactly_graphs(env: Env):
    box = await env.mailbox()
    token = await env.token(box["user_id"])
    sub = await subscribe(env, token)
    message_id = await env.deliver(box["user_id"])
    [item] = await received(env, 1)
    resource = f"Users/{box['user_id']}/Messages/{message_id}"
    assert set(item) == {"subscriptionId", "subscriptionExpirationDateTime", "clientState", "changeType",
                         "resource", "tenantId", "resourceData"}
    assert (item["subscriptionId"], item["clientState"], item["changeType"], item["resource"], item["tenantId"]) == (
        sub["id"], "secret-state", "created", resource, box["tenant_id"])
    assert item["subscriptionExpirationDateTime"].endswith("+00:00")
    data = item["resourceData"]
    assert set(data) == {"@odata.type", "@odata.id", "@odata.etag", "id"}
    assert (data["@odata.type"], data["@odata.id"], data["id"]) == ("#Microsoft.Graph.Message", resource, message_id)
    assert data["@odata.etag"].startswith('W/"')
    stats = await env.settled()
    assert stats["mailboxes"][box["user_id"]]["notifications"]["sent"] == 1


async def test_moves_and_deletes_per_subscription_scope(env: Env):
    box = await env.mailbox()
    token = await env.token(box["user_id"])
    whole = await subscribe(env, token)
    inbox = await subscribe(env, token, resource="/me/mailFolders('inbox')/messages")
    archive = await subscribe(env, token, resource="me/mailFolders/archive/messages", changeType="created")
    message_id = await env.deliver(box["user_id"])
    await env.control("POST", f"/sandbox/mailboxes/{box['user_id']}/messages/{message_id}/move", {"folder": "archive"})
    await env.control("DELETE", f"/sandbox/mailboxes/{box['user_id']}/messages/{message_id}", expect=204)
    await received(env, 6)
    await env.settled()
    seen = sorted((n["subscriptionId"], n["changeType"]) for n in env.receiver.notifications)
    assert seen == sorted([(whole["id"], "created"), (whole["id"], "updated"), (whole["id"], "deleted"),
                           (inbox["id"], "created"), (inbox["id"], "deleted"), (archive["id"], "created")])


async def test_failed_deliveries_are_retried_with_back_off(env: Env):
    # Graph's back-off is minutes (1, 2, 4 ... of sandbox time): the clock runs 600 times faster here.
    box = await env.mailbox()
    await subscribe(env, await env.token(box["user_id"]))
    await env.control("POST", "/sandbox/clock", {"speed": 600})
    env.receiver.statuses.extend([500, 503])
    message_id = await env.deliver(box["user_id"])
    items = await received(env, 3)
    assert [i["resourceData"]["id"] for i in items] == [message_id] * 3
    stats = await env.settled()
    counts = stats["mailboxes"][box["user_id"]]["notifications"]
    assert (counts["sent"], counts["retried"], counts["failed"]) == (1, 2, 0)
    endpoint = stats["endpoints"][f"{env.receiver.url}/notify"]
    assert endpoint["posts"] == 3 and endpoint["failed_posts"] == 2


async def test_a_slow_answer_counts_as_failed_and_slow(env: Env):
    box = await env.mailbox()
    await env.control("POST", "/sandbox/faults", {"notification_timeout_ms": 150})
    await subscribe(env, await env.token(box["user_id"]))
    await env.control("POST", "/sandbox/clock", {"speed": 600})  # the retry comes a sandbox minute later
    env.receiver.delays.append(0.4)
    await env.deliver(box["user_id"])
    await received(env, 2)  # the slow POST was recorded by the receiver, then retried
    stats = await env.settled()
    endpoint = stats["endpoints"][f"{env.receiver.url}/notify"]
    assert endpoint["slow"] == 1 and stats["notifications"]["retried"] == 1 and stats["notifications"]["sent"] == 1


async def test_giving_up_after_the_retry_window(env: Env):
    # Four hours of Graph's retries, 20,000 times faster (under a second). No lifecycle URL: hours of sandbox
    # time would bring reauthorizationRequired notifications too.
    box = await env.mailbox()
    await subscribe(env, await env.token(box["user_id"]), lifecycleNotificationUrl=None)
    env.receiver.statuses.extend([500] * 30)
    await env.deliver(box["user_id"])
    await env.control("POST", "/sandbox/clock", {"speed": 20_000})
    stats = await env.settled()
    assert stats["notifications"]["failed"] == 1 and stats["notifications"]["sent"] == 0


async def test_drop_and_duplicate_faults(env: Env):
    box = await env.mailbox()
    await subscribe(env, await env.token(box["user_id"]))
    await env.control("POST", "/sandbox/faults", {"notification_drop_rate": 1.0})
    await env.deliver(box["user_id"])
    stats = await env.settled()
    assert stats["notifications"]["dropped"] == 1 and env.receiver.posts == []
    await env.control("POST", "/sandbox/faults", {"notification_drop_rate": 0.0, "notification_duplicate_rate": 1.0})
    message_id = await env.deliver(box["user_id"])
    items = await received(env, 2)
    assert [i["resourceData"]["id"] for i in items] == [message_id, message_id]
    assert (await env.settled())["notifications"]["duplicated"] == 1


async def test_notifications_that_queue_up_share_a_post(env: Env):
    box = await env.mailbox()
    await subscribe(env, await env.token(box["user_id"]))
    env.receiver.delays.extend([0.5] * 4)
    for _ in range(12):
        await env.deliver(box["user_id"])
    items = await received(env, 12)
    assert len(items) == 12 and len(env.receiver.posts) < 12
    assert max(len(p["value"]) for p in env.receiver.posts) > 1


async def test_lifecycle_events(env: Env):
    box = await env.mailbox()
    token = await env.token(box["user_id"])
    sub = await subscribe(env, token)
    await env.control("POST", "/sandbox/lifecycle", {"subscription_id": sub["id"], "event": "reauthorizationRequired"},
                      expect=202)
    [event] = await received(env, 1, lifecycle=True)
    assert event == {"subscriptionId": sub["id"], "subscriptionExpirationDateTime": event[
        "subscriptionExpirationDateTime"], "tenantId": box["tenant_id"], "clientState": "secret-state",
        "lifecycleEvent": "reauthorizationRequired"}
    await env.deliver(box["user_id"])  # paused: lost
    assert (await env.settled())["notifications"]["dropped"] == 1 and env.receiver.posts == []
    status, _, _ = await env.graph("POST", f"/subscriptions/{sub['id']}/reauthorize", token)
    assert status == 204
    await env.deliver(box["user_id"])
    await received(env, 1)

    await env.control("POST", "/sandbox/lifecycle", {"subscription_id": sub["id"], "event": "subscriptionRemoved"},
                      expect=202)
    events = await received(env, 2, lifecycle=True)
    assert events[-1]["lifecycleEvent"] == "subscriptionRemoved"
    status, body, _ = await env.graph("PATCH", f"/subscriptions/{sub['id']}", token,
                                      body={"expirationDateTime": expiry(120)})
    assert status == 404 and body["error"]["code"] == "ResourceNotFound"


async def test_renew_delete_and_expiry(env: Env):
    box = await env.mailbox()
    token = await env.token(box["user_id"])
    sub = await subscribe(env, token)
    status, renewed, _ = await env.graph("PATCH", f"/subscriptions/{sub['id']}", token,
                                         body={"expirationDateTime": expiry(4000)})
    assert status == 200 and parse(renewed["expirationDateTime"]) > parse(sub["expirationDateTime"])
    status, body, _ = await env.graph("PATCH", f"/subscriptions/{sub['id']}", token,
                                      body={"lifecycleNotificationUrl": f"{env.receiver.url}/elsewhere"})
    assert status == 400
    status, _, _ = await env.graph("DELETE", f"/subscriptions/{sub['id']}", token)
    assert status == 204
    assert (await env.graph("GET", f"/subscriptions/{sub['id']}", token))[0] == 404

    other = await subscribe(env, token)
    await env.control("POST", f"/sandbox/subscriptions/{other['id']}/expire")
    status, body, _ = await env.graph("PATCH", f"/subscriptions/{other['id']}", token,
                                      body={"expirationDateTime": expiry(120)})
    assert status == 404 and body["error"]["code"] == "ResourceNotFound"
    await env.deliver(box["user_id"])
    stats = await env.settled()  # nothing was queued for an expired subscription
    assert env.receiver.posts == [] and stats["notifications"]["sent"] == 0

"""The sandbox behaves as Microsoft documents where production depends on it (issue 11): the clock,
password reset and continuous access evaluation, Conditional Access, spontaneous
reauthorizationRequired, the notification retry schedule, offsets in times, nested error codes, the
$batch variants, reusable refresh tokens and notificationContentType. Each test fails on the sandbox
as it was before."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tests.integration.sandbox_support import Env, env, jwt_claims, pkce, query, servers
from tests.support.wait import wait_until

pytestmark = pytest.mark.asyncio(loop_scope="session")
__all__ = ["env", "servers"]

REDIRECT = "http://127.0.0.1:9/callback"
CP1 = {"access_token": {"xms_cc": {"values": ["cp1"]}}}


def parse(value: str) -> datetime:
    """A UTC time Graph wrote (`...Z`, 0 or 7 fractional digits)."""
    head, _, tail = value.replace("Z", "").partition(".")
    return datetime.fromisoformat(f"{head}.{tail[:6].ljust(6, '0')}").replace(tzinfo=UTC)


async def sandbox_now(env: Env) -> datetime:
    return parse((await env.control("GET", "/sandbox/clock"))["now"])


async def expiry(env: Env, minutes: float) -> str:
    """An expirationDateTime `minutes` ahead of the sandbox's clock (which may run ahead of ours)."""
    return (await sandbox_now(env) + timedelta(minutes=minutes)).strftime("%Y-%m-%dT%H:%M:%S.%f0Z")


async def subscribe(env: Env, token: str, *, lifecycle: bool = True, minutes: float = 4000) -> dict[str, Any]:
    body = {"changeType": "created", "notificationUrl": f"{env.receiver.url}/notify",
            "lifecycleNotificationUrl": f"{env.receiver.url}/lifecycle" if lifecycle else None,
            "resource": "/me/messages", "expirationDateTime": await expiry(env, minutes), "clientState": "st"}
    status, created, _ = await env.graph("POST", "/subscriptions", token, body=body)
    assert status == 201, created
    return created


async def lifecycle_events(env: Env, count: int, event: str) -> list[dict[str, Any]]:
    async def enough() -> list[dict[str, Any]] | None:
        items = [i for p in env.receiver.lifecycle_posts for i in p["value"] if i["lifecycleEvent"] == event]
        return items if len(items) >= count else None
    return await wait_until(enough, timeout=10, interval=0.02, what=f"{count} {event}")


async def control_view(env: Env, sub_id: str) -> dict[str, Any]:
    [found] = [s for s in (await env.control("GET", "/sandbox/subscriptions"))["value"] if s["id"] == sub_id]
    return found


async def sign_in(env: Env, address: str, claims: dict[str, Any] | None = None) -> dict[str, Any]:
    """Authorization code + PKCE, optionally declaring client capabilities with the `claims` parameter."""
    verifier, challenge = pkce()
    resp = await env.authorize(address, challenge=challenge, redirect_uri=REDIRECT)
    assert resp.status == 302, resp.status
    form = {"grant_type": "authorization_code", "code": query(resp)["code"], "code_verifier": verifier,
            "redirect_uri": REDIRECT}
    if claims is not None:
        form["claims"] = json.dumps(claims)
    status, body = await env.token_post(form)
    assert status == 200, body
    return body


async def refresh(env: Env, tokens: dict[str, Any], claims: dict[str, Any] | None = None
                  ) -> tuple[int, dict[str, Any]]:
    form = {"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]}
    if claims is not None:
        form["claims"] = json.dumps(claims)
    return await env.token_post(form)


def challenge_of(header: str) -> dict[str, Any]:
    """The decoded `claims` of a `WWW-Authenticate: Bearer ..., error="insufficient_claims", claims="..."`."""
    assert header.startswith("Bearer ") and 'error="insufficient_claims"' in header, header
    encoded = header.split('claims="', 1)[1].split('"', 1)[0]
    decoded: dict[str, Any] = json.loads(base64.b64decode(encoded))
    return decoded


# --- 1. the clock ------------------------------------------------------------------------------


async def test_the_clock_runs_faster_jumps_and_drives_token_and_subscription_lifetimes(env: Env):
    clock = await env.control("GET", "/sandbox/clock")
    assert clock["speed"] == 1 and abs((parse(clock["now"]) - datetime.now(UTC)).total_seconds()) < 5
    box = await env.mailbox()
    token = await env.token(box["user_id"])
    sub = await subscribe(env, token, minutes=60)

    sped = await env.control("POST", "/sandbox/clock", {"speed": 60})
    assert sped["speed"] == 60
    # expires_in is in real seconds (sandbox seconds / speed): the services compare it with their own clock.
    fresh = await env.control("POST", "/sandbox/tokens", {"user_id": box["user_id"]})
    assert fresh["expires_in"] == 4500 // 60
    claims = jwt_claims(fresh["access_token"])
    assert claims["exp"] - claims["iat"] == 4500  # the token itself lives 75 sandbox minutes

    before = await sandbox_now(env)
    await env.control("POST", "/sandbox/clock", {"advance_s": 3600})
    assert (await sandbox_now(env) - before).total_seconds() >= 3600
    # An hour later (sandbox time) the 60-minute subscription has expired and the first token too.
    status, body, _ = await env.graph("GET", f"/subscriptions/{sub['id']}", fresh["access_token"])
    assert status == 404 and body["error"]["code"] == "ResourceNotFound"
    await env.control("POST", "/sandbox/clock", {"advance_s": 3600})
    status, body, _ = await env.graph("GET", "/me/messages", token)
    assert status == 401 and "expired" in body["error"]["message"]
    # Times the sandbox writes come from its clock.
    message = await env.control("POST", f"/sandbox/mailboxes/{box['user_id']}/messages",
                                {"from": "a@fabrikam.example", "subject": "late"}, expect=201)
    assert (parse(message["received_at"]) - datetime.now(UTC)).total_seconds() > 7000

    await env.control("POST", "/sandbox/clock", {"speed": 0.5}, expect=400)
    await env.control("POST", "/sandbox/clock", {"advance_s": -1}, expect=400)
    await env.control("POST", "/sandbox/reset")
    clock = await env.control("GET", "/sandbox/clock")
    assert clock["speed"] == 1 and abs((parse(clock["now"]) - datetime.now(UTC)).total_seconds()) < 5


# --- 2. password reset ---------------------------------------------------------------------------


async def test_password_reset_removes_the_users_subscriptions_with_subscription_removed(env: Env):
    box = await env.mailbox()
    tokens = await sign_in(env, box["address"])
    subs = [await subscribe(env, tokens["access_token"]), await subscribe(env, tokens["access_token"])]
    other = await env.mailbox()
    kept = await subscribe(env, await env.token(other["user_id"]))

    revoked = await env.control("POST", f"/sandbox/users/{box['user_id']}/revoke", {"reason": "password_reset"})
    assert sorted(revoked["subscriptions_removed"]) == sorted(s["id"] for s in subs)
    events = await lifecycle_events(env, 2, "subscriptionRemoved")
    assert sorted(e["subscriptionId"] for e in events) == sorted(s["id"] for s in subs)
    live = [s["id"] for s in (await env.control("GET", "/sandbox/subscriptions"))["value"]]
    assert live == [kept["id"]]
    # The refresh fails with the revocation's code...
    status, body = await refresh(env, tokens)
    assert status == 400 and body["error"] == "invalid_grant" and body["error_codes"] == [50173]
    # ... while the access token (no cp1) keeps working until it expires, as Microsoft documents.
    status, _, _ = await env.graph("GET", "/me/messages", tokens["access_token"])
    assert status == 200
    status, _, _ = await env.graph("GET", f"/subscriptions/{subs[0]['id']}", tokens["access_token"])
    assert status == 404


async def test_revoked_access_tokens_live_until_they_expire_without_cp1(env: Env):
    await env.control("POST", "/sandbox/faults", {"access_token_lifetime_s": 600})
    box = await env.mailbox()
    tokens = await sign_in(env, box["address"])
    await env.control("POST", f"/sandbox/users/{box['user_id']}/revoke", {"reason": "password_reset"})
    assert (await env.graph("GET", "/me/messages", tokens["access_token"]))[0] == 200
    await env.control("POST", "/sandbox/clock", {"advance_s": 601})
    status, body, _ = await env.graph("GET", "/me/messages", tokens["access_token"])
    assert status == 401 and body["error"]["code"] == "InvalidAuthenticationToken"


async def test_a_cp1_client_gets_a_claims_challenge_at_once_and_the_claims_request_fails_like_a_refresh(env: Env):
    box = await env.mailbox()
    capable = await sign_in(env, box["address"], claims=CP1)
    plain = await sign_in(env, box["address"])
    assert jwt_claims(capable["access_token"])["xms_cc"] == ["cp1"]
    assert "xms_cc" not in jwt_claims(plain["access_token"])
    assert (await env.graph("GET", "/me/messages", capable["access_token"]))[0] == 200

    revoked = await env.control("POST", f"/sandbox/users/{box['user_id']}/revoke", {"reason": "password_reset"})
    assert (revoked["access_tokens_live"], revoked["access_tokens_challenged"]) == (2, 1)
    status, body, headers = await env.graph("GET", "/me/messages", capable["access_token"])
    assert status == 401 and body["error"]["code"] == "InvalidAuthenticationToken"
    header = headers["WWW-Authenticate"]
    assert 'realm=""' in header and 'authorization_uri="https://login.microsoftonline.com/' in header
    asked = challenge_of(header)
    nbf = asked["access_token"]["nbf"]
    assert nbf["essential"] is True and abs(int(nbf["value"]) - datetime.now(UTC).timestamp()) < 60
    assert (await env.graph("GET", "/me/messages", plain["access_token"]))[0] == 200  # no cp1: still valid

    # The client answers the challenge: claims merged with its capabilities; the grant is revoked.
    merged = {"access_token": {**CP1["access_token"], **asked["access_token"]}}
    status, answer = await refresh(env, capable, claims=merged)
    assert status == 400 and answer["error"] == "invalid_grant" and answer["error_codes"] == [50173]
    # Signing in again gives a token the challenge no longer concerns.
    again = await sign_in(env, box["address"], claims=merged)
    assert (await env.graph("GET", "/me/messages", again["access_token"]))[0] == 200


# --- 3. Conditional Access -----------------------------------------------------------------------


async def test_a_conditional_access_block_refuses_tokens_and_challenges_cp1_tokens(env: Env):
    box = await env.mailbox()
    capable = await sign_in(env, box["address"], claims=CP1)
    plain = await sign_in(env, box["address"])
    policy = f"/sandbox/tenants/{box['tenant_id']}/policy"
    answer = await env.control("POST", policy, {"conditional_access_block": True})
    assert answer["conditional_access_block"] is True and answer["admin_consent_required"] is False

    status, body = await refresh(env, plain)
    assert status == 400 and body["error"] == "interaction_required" and body["error_codes"] == [53003]
    assert body["suberror"] == "message_only" and body["error_description"].startswith("AADSTS53003:")
    resp = await env.authorize(box["address"], redirect_uri=REDIRECT)
    assert resp.status == 302 and query(resp)["error"] == "access_denied"
    assert query(resp)["error_description"].startswith("AADSTS53003:")

    status, body, headers = await env.graph("GET", "/me/messages", capable["access_token"])
    assert status == 403 and body["error"]["code"] == "InsufficientClaims"
    assert "nbf" in challenge_of(headers["WWW-Authenticate"])["access_token"]
    assert (await env.graph("GET", "/me/messages", plain["access_token"]))[0] == 200  # valid until expiry

    await env.control("POST", policy, {"conditional_access_block": False})
    status, body = await refresh(env, capable, claims=CP1)
    assert status == 200
    assert (await env.graph("GET", "/me/messages", capable["access_token"]))[0] == 200
    await env.control("POST", policy, {"conditional_access_block": "yes"}, expect=400)


# --- 4. spontaneous reauthorizationRequired -----------------------------------------------------


async def test_graph_sends_reauthorization_required_on_its_own_until_reauthorized(env: Env):
    box = await env.mailbox()
    token = await env.control("POST", "/sandbox/tokens", {"user_id": box["user_id"]})  # lives 4500 s
    sub = await subscribe(env, token["access_token"])
    quiet = await subscribe(env, token["access_token"], lifecycle=False)

    await env.control("POST", "/sandbox/clock", {"advance_s": 850})  # the last hour starts at 900 s
    assert (await control_view(env, sub["id"]))["reauthorizationsSent"] == 0
    await env.control("POST", "/sandbox/clock", {"advance_s": 1000})  # within the last hour (and its 15 min)
    [first] = await lifecycle_events(env, 1, "reauthorizationRequired")
    assert first["subscriptionId"] == sub["id"] and first["clientState"] == "st"
    await env.control("POST", "/sandbox/clock", {"advance_s": 45 * 60})  # not answered: again within 15-45 min
    await lifecycle_events(env, 2, "reauthorizationRequired")
    stats = await env.stats()
    assert stats["lifecycle"]["reauthorizationRequired"] == stats["lifecycle"]["spontaneous"] == 2
    assert stats["mailboxes"][box["user_id"]]["lifecycle"]["spontaneous"] == 2
    assert (await control_view(env, quiet["id"]))["reauthorizationsSent"] == 0  # no lifecycle URL, none

    # The token (4500 s) has now expired unanswered: notifications are lost until the subscription is
    # reauthorized.
    await env.deliver(box["user_id"])
    assert (await env.settled())["mailboxes"][box["user_id"]]["notifications"]["dropped"] == 1

    fresh = await env.control("POST", "/sandbox/tokens", {"user_id": box["user_id"]})
    status, _, _ = await env.graph("POST", f"/subscriptions/{sub['id']}/reauthorize", fresh["access_token"])
    assert status == 204
    view = await control_view(env, sub["id"])
    assert view["reauthorizationsSent"] == 0
    assert parse(view["tokenExpirationDateTime"]).timestamp() == pytest.approx(
        jwt_claims(fresh["access_token"])["exp"], abs=1)
    await env.control("POST", "/sandbox/clock", {"advance_s": 850})  # the fresh token is far from expiry
    assert (await control_view(env, sub["id"]))["reauthorizationsSent"] == 0
    message_id = await env.deliver(box["user_id"])

    async def delivered() -> bool:
        return any(i["resourceData"]["id"] == message_id and i["subscriptionId"] == sub["id"]
                   for i in env.receiver.notifications)
    await wait_until(delivered, timeout=10, interval=0.02, what="the notification after reauthorizing")


async def test_short_lived_tokens_get_the_schedule_scaled_not_a_tight_loop(env: Env):
    await env.control("POST", "/sandbox/faults", {"access_token_lifetime_s": 120})
    box = await env.mailbox()
    sub = await subscribe(env, await env.token(box["user_id"]))
    assert (await control_view(env, sub["id"]))["reauthorizationsSent"] == 0  # not at once: 24-48 s in
    await env.control("POST", "/sandbox/clock", {"advance_s": 50})
    await lifecycle_events(env, 1, "reauthorizationRequired")
    status, _, _ = await env.graph("POST", f"/subscriptions/{sub['id']}/reauthorize", await env.token(box["user_id"]))
    assert status == 204
    await env.control("POST", "/sandbox/clock", {"advance_s": 20})
    assert (await control_view(env, sub["id"]))["reauthorizationsSent"] == 0


async def test_hours_of_reauthorization_pass_in_seconds_with_a_fast_clock(env: Env):
    box = await env.mailbox()
    token = await env.token(box["user_id"])
    sub = await subscribe(env, token)
    await env.control("POST", "/sandbox/clock", {"speed": 3600})  # an hour a second
    events = await lifecycle_events(env, 3, "reauthorizationRequired")
    assert {e["subscriptionId"] for e in events} == {sub["id"]}


# --- 5. retries on Microsoft's schedule ------------------------------------------------------------


async def test_failed_deliveries_are_retried_for_four_hours_of_sandbox_time_then_dropped(env: Env):
    box = await env.mailbox()
    await subscribe(env, await env.token(box["user_id"]), lifecycle=False)
    env.receiver.statuses.extend([503] * 30)
    await env.deliver(box["user_id"])

    async def first_failed() -> dict[str, Any] | None:
        stats = await env.stats()
        return stats if stats["notifications"]["retried"] >= 1 else None
    stats = await wait_until(first_failed, timeout=5, interval=0.02, what="the first attempt to fail")
    # Graph waits minutes, not milliseconds: the retry is still queued at speed 1.
    assert stats["notifications"]["pending"] == 1 and len(env.receiver.posts) == 1
    await env.control("POST", "/sandbox/clock", {"speed": 20_000})  # 4 hours in 0.7 s
    stats = await env.settled()
    counts = stats["mailboxes"][box["user_id"]]["notifications"]
    # Attempts at 0, 1, 3, 7, 15, 31, 63, 123 and 183 minutes; the next would come after 4 hours.
    assert (counts["sent"], counts["retried"], counts["failed"], counts["dropped"]) == (0, 8, 1, 1)
    assert len(env.receiver.posts) == 9


async def test_an_endpoint_slow_on_a_tenth_of_its_notifications_is_delayed_ten_minutes(env: Env):
    box = await env.mailbox()
    await subscribe(env, await env.token(box["user_id"]), lifecycle=False)
    url = f"{env.receiver.url}/notify"
    await env.control("POST", "/sandbox/faults", {"notification_timeout_ms": 200})  # "slow" = over 194 ms here

    async def endpoint(key: str, count: int) -> dict[str, Any] | None:
        stats = await env.stats()
        counts = stats["endpoints"].get(url, {})
        return stats if counts.get(key, 0) >= count else None

    for i in range(11):  # 11 slow notifications, one per POST ...
        env.receiver.delays.append(0.4)
        await env.deliver(box["user_id"])
        await wait_until(lambda i=i: endpoint("slow", i + 1), timeout=10, interval=0.02, what="a slow POST")
    for _ in range(90):  # ... among 101 in the 10-minute window: 10.9 %
        await env.deliver(box["user_id"])

    async def fast_ones() -> bool:
        return (await env.stats())["notifications"]["sent"] >= 90
    await wait_until(fast_ones, timeout=20, interval=0.05, what="90 fast notifications")
    late = await env.deliver(box["user_id"])
    stats = await env.stats()
    assert stats["notifications"]["delayed"] == 1 and stats["notifications"]["dropped"] == 0
    assert late not in {i["resourceData"]["id"] for i in env.receiver.notifications}
    await env.control("POST", "/sandbox/clock", {"advance_s": 601})  # Graph delays it 10 minutes

    async def arrived() -> bool:
        return late in {i["resourceData"]["id"] for i in env.receiver.notifications}
    await wait_until(arrived, timeout=10, interval=0.02, what="the delayed notification")


# --- 6. offsets in times ----------------------------------------------------------------------------


async def test_received_times_keep_their_offset_and_seven_digits(env: Env):
    box = await env.mailbox()
    token = await env.token(box["user_id"])
    message_id = await env.deliver(box["user_id"], received_at="2022-01-02T03:12:18.2257768+05:30")
    utc_id = await env.deliver(box["user_id"], received_at="2022-01-02T03:12:18Z")
    status, body, _ = await env.graph("GET", f"/me/messages/{message_id}?$select=receivedDateTime,sentDateTime",
                                      token)
    assert status == 200
    assert body["receivedDateTime"] == body["sentDateTime"] == "2022-01-02T03:12:18.2257760+05:30"
    status, body, _ = await env.graph("GET", f"/me/messages/{utc_id}?$select=receivedDateTime", token)
    assert body["receivedDateTime"] == "2022-01-02T03:12:18Z"
    # The offset is read after the fraction: 03:12:18.2257768+05:30 is 21:42:18.2257768 UTC the day before.
    found = "/me/messages?$select=id&$filter=receivedDateTime ge 2022-01-01T21:42:18Z and " \
            "receivedDateTime lt 2022-01-01T21:42:19Z"
    status, body, _ = await env.graph("GET", found, token)
    assert status == 200 and [m["id"] for m in body["value"]] == [message_id]


# --- 7. nested error codes ---------------------------------------------------------------------------


async def test_an_expired_delta_token_nests_sync_state_not_found(env: Env):
    box = await env.mailbox()
    token = await env.token(box["user_id"])
    await env.deliver(box["user_id"])
    status, page, _ = await env.graph("GET", "/me/mailFolders/inbox/messages/delta", token)
    assert status == 200
    await env.control("POST", "/sandbox/faults", {"expire_delta_tokens": True})
    status, gone, headers = await env.graph("GET", page["@odata.deltaLink"], token)
    assert status == 410 and headers["Location"].startswith(env.url)
    assert gone["error"]["code"] == "ErrorInvalidSyncState"
    assert gone["error"]["innerError"]["code"] == "syncStateNotFound"


# --- 8. $batch variants ----------------------------------------------------------------------------


async def test_a_throttled_batch_as_a_whole_424_and_lower_case_step_headers(env: Env):
    box = await env.mailbox()
    token = await env.token(box["user_id"])
    steps = [{"id": str(i), "method": "GET", "url": "/me/messages?$select=id"} for i in range(4)]
    await env.control("POST", "/sandbox/faults", {"throttle": {"per_mailbox_per_10min": 2},
                                                  "batch_lowercase_headers": True})
    status, body, _ = await env.graph("POST", "/$batch", token, body={"requests": steps})
    assert status == 200
    throttled = [r for r in body["responses"] if r["status"] == 429]
    assert throttled and all("retry-after" in r["headers"] and "Retry-After" not in r["headers"] for r in throttled)
    assert all("content-type" in r["headers"] for r in body["responses"])

    await env.control("POST", "/sandbox/faults", {"batch_424": True})
    status, body, headers = await env.graph("POST", "/$batch", token, body={"requests": steps})
    assert status == 424 and body["error"]["code"] == "FailedDependency"
    assert float(headers["Retry-After"]) > 0
    assert {r["status"] for r in body["responses"]} == {429}


# --- 9 and 10: refresh tokens and the subscription resource ----------------------------------------


async def test_refresh_tokens_are_reusable_until_they_expire(env: Env):
    box = await env.mailbox()
    first = await sign_in(env, box["address"])
    results = [await refresh(env, first) for _ in range(3)]
    assert [status for status, _ in results] == [200, 200, 200]
    assert len({body["refresh_token"] for _, body in results} | {first["refresh_token"]}) == 4
    await env.control("POST", "/sandbox/clock", {"advance_s": 91 * 24 * 3600})
    status, body = await refresh(env, first)
    assert status == 400 and body["error"] == "invalid_grant"


async def test_subscriptions_carry_notification_content_type(env: Env):
    box = await env.mailbox()
    token = await env.token(box["user_id"])
    sub = await subscribe(env, token)
    assert sub["notificationContentType"] == "application/json"
    status, got, _ = await env.graph("GET", f"/subscriptions/{sub['id']}", token)
    assert status == 200 and got["notificationContentType"] == "application/json"

"""Account-scoped API tokens (docs/contract.md#api-auth; issue 10, finding 5): for random pairs of accounts,
nothing account X's token can call returns or changes account Y's data. Reads answer 404 with the body an
unknown id gets; writes answer the same and change nothing (checked in SQL). Positive controls: X's token
sees X's own data, the operator's token sees both."""

from __future__ import annotations

import json
import re
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

import jwt
import pytest
import pytest_asyncio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.stack import Stack
from tests.support.wait import wait_until

pytestmark = [pytest.mark.e2e]

ACCOUNTS = 3
EXAMPLES = 25
HEADERS = "Message-ID: {imid}\r\nFrom: {frm}\r\nTo: {to}\r\nSubject: Hello\r\nDate: Mon, 2 Mar 2026 10:00:00 +0000\r\n"


@dataclass
class Tenant:
    account_id: str
    user_id: str  # connected
    connection_id: str
    idle_user_id: str  # never connected
    contact_id: str
    contact_address: str
    address: str
    imid: str  # a message matched into an engagement
    backsync_id: str
    send_id: str  # a send through the API (to a non-contact, so the contact's timeline keeps one engagement)


def api_token(stack: Stack, account_id: str, *, ttl_s: int = 3600, aud: Any = "mailsync-api",
              secret: str | None = None, **extra: Any) -> str:
    claims: dict[str, Any] = {"account_id": account_id, "exp": int(time.time()) + ttl_s, **extra}
    if aud is not None:
        claims["aud"] = aud
    return jwt.encode(claims, secret or stack.env["MAILSYNC_SESSION_SECRET"], algorithm="HS256")


async def call(stack: Stack, token: str, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    assert stack.http is not None
    async with stack.http.request(method, f"{stack.api_url}{path}", json=body,
                                  headers={"Authorization": f"Bearer {token}"}) as resp:
        return resp.status, await resp.json(content_type=None)


async def settled(stack: Stack, connection_id: str) -> bool:
    """The connection's first poll and back-fill are over: nothing changes its row on its own any more."""
    assert stack.pool is not None
    return bool(await stack.pool.fetchval(
        """SELECT c.last_polled_at IS NOT NULL AND c.poll_lease_until IS NULL AND c.next_poll_at > now()
                  AND NOT EXISTS (SELECT 1 FROM sync_jobs j WHERE j.connection_id = c.connection_id
                                   AND j.status IN ('queued', 'running'))
             FROM mailbox_connections c WHERE c.connection_id = $1::uuid""", connection_id))


async def seed(stack: Stack) -> Tenant:
    assert stack.pool is not None
    account = stack.new_account()
    contact_address = f"buyer@{account}.client.example"
    contact = await stack.add_contact(account, contact_address)
    await stack.wait_contact(contact)
    mailbox = await stack.new_mailbox(account)
    idle = await stack.new_mailbox(account, connect=False)
    status, tenant = await stack.api("POST", f"/api/v1/accounts/{account}/tenant-connection",
                                     {"tenant_id": str(uuid.uuid4())})  # pending consent: a tenant-scoped read
    assert status == 200, tenant
    imid = await stack.deliver(mailbox, **{"from": contact_address, "subject": "Scope"})
    await stack.wait_row("SELECT 1 FROM engagement_contacts WHERE contact_id = $1", contact,
                         what=f"engagement of {contact}", timeout=60)
    now = datetime.now(UTC)
    status, created = await stack.api("POST", f"/api/v1/connections/{mailbox.connection_id}/backsyncs", {
        "since": (now - timedelta(days=3)).isoformat(), "until": (now - timedelta(days=2)).isoformat(),
        "dry_run": True})
    assert status == 202, created
    status, sent = await stack.api("POST", f"/api/v1/users/{mailbox.user_id}/send", {
        "to": [f"someone@{account}.elsewhere.example"], "subject": "Scope", "body": "x",
        "idempotency_key": uuid.uuid4().hex})
    assert status == 202, sent
    await wait_until(lambda: settled(stack, mailbox.connection_id), timeout=90,
                     what=f"connection {mailbox.connection_id} settled")
    # Its next hourly poll may fall in the next seconds; moved out of the test's way, so the row stays still
    # unless a call changes it (a leaked "sync now" would set it to now()).
    await stack.pool.execute("UPDATE mailbox_connections SET next_poll_at = now() + interval '1 day'"
                             " WHERE connection_id = $1::uuid", mailbox.connection_id)
    return Tenant(account_id=account, user_id=mailbox.user_id, connection_id=mailbox.connection_id,
                  idle_user_id=idle.user_id, contact_id=contact, contact_address=contact_address,
                  address=mailbox.address, imid=imid, backsync_id=created["backsync_id"], send_id=sent["send_id"])


@dataclass(frozen=True)
class World:
    """The stack and the seeded accounts, with a short repr: Hypothesis prints its arguments on failure,
    and the stack's repr would carry its secrets."""

    stack: Stack = field(repr=False)
    tenants: list[Tenant]


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def world(stack: Stack) -> World:
    return World(stack, [await seed(stack) for _ in range(ACCOUNTS)])


@dataclass(frozen=True)
class Op:
    name: str
    method: str
    path: str  # {id} is the target's id
    target: str  # which of the tenant's ids: an attribute of Tenant
    unknown: str  # how an id that does not exist looks ("uuid" or a prefix)
    writes: bool = False

    def body(self, t: Tenant, target_id: str) -> Any:
        if self.name == "diagnose_post":
            return {"user_id": target_id, "headers": HEADERS.format(imid=t.imid, frm=t.contact_address, to=t.address)}
        if self.name == "send_create":
            return {"to": ["someone@elsewhere.example"], "subject": "s", "body": "b",
                    "idempotency_key": uuid.uuid4().hex}
        if self.name == "tenant_connect":
            return {"tenant_id": str(uuid.uuid4())}
        if self.name == "shared_mailbox_add":
            return {"address": f"shared-{uuid.uuid4().hex[:8]}@elsewhere.example"}
        if self.name == "backsync_create":
            now = datetime.now(UTC)
            return {"since": (now - timedelta(days=5)).isoformat(), "until": (now - timedelta(days=4)).isoformat(),
                    "dry_run": True}
        return None

    def url(self, t: Tenant, target_id: str) -> str:
        return self.path.format(id=quote(target_id, safe=""), imid=quote(t.imid, safe=""))

    def fresh_unknown_id(self) -> str:
        return str(uuid.uuid4()) if self.unknown == "uuid" else f"{self.unknown}-{uuid.uuid4().hex[:10]}"


OPS = (
    Op("connection", "GET", "/api/v1/users/{id}/connection", "user_id", "user"),
    Op("idle_connection", "GET", "/api/v1/users/{id}/connection", "idle_user_id", "user"),
    Op("engagements", "GET", "/api/v1/contacts/{id}/engagements", "contact_id", "contact"),
    Op("backsync", "GET", "/api/v1/backsyncs/{id}", "backsync_id", "uuid"),
    Op("diagnose_get", "GET", "/api/v1/diagnose?user_id={id}&internet_message_id={imid}", "user_id", "user"),
    Op("diagnose_post", "POST", "/api/v1/diagnose", "user_id", "user"),
    Op("sync", "POST", "/api/v1/connections/{id}/sync", "connection_id", "uuid", writes=True),
    Op("backsync_create", "POST", "/api/v1/connections/{id}/backsyncs", "connection_id", "uuid", writes=True),
    Op("disconnect", "POST", "/api/v1/connections/{id}/disconnect", "connection_id", "uuid", writes=True),
    Op("tenant_connection", "GET", "/api/v1/accounts/{id}/tenant-connection", "account_id", "acct"),
    Op("tenant_connect", "POST", "/api/v1/accounts/{id}/tenant-connection", "account_id", "acct", writes=True),
    Op("tenant_disconnect", "DELETE", "/api/v1/accounts/{id}/tenant-connection", "account_id", "acct", writes=True),
    Op("shared_mailbox_add", "POST", "/api/v1/accounts/{id}/shared-mailboxes", "account_id", "acct", writes=True),
    Op("shared_mailbox_remove", "DELETE", "/api/v1/accounts/{id}/shared-mailboxes/{id}", "account_id", "acct",
       writes=True),
    Op("send", "GET", "/api/v1/sends/{id}", "send_id", "uuid"),
    Op("send_create", "POST", "/api/v1/users/{id}/send", "user_id", "user", writes=True),
)


async def snapshot(stack: Stack, t: Tenant) -> dict[str, Any]:
    """Everything of Y's that a write through the API could change."""
    assert stack.pool is not None
    row = await stack.pool.fetchrow(
        """SELECT c.status, c.reason, c.access_token_enc IS NOT NULL AS has_access,
                  c.refresh_token_enc IS NOT NULL AS has_refresh, c.next_poll_at, c.last_polled_at,
                  c.status_changed_at,
                  (SELECT count(*) FROM sync_jobs j WHERE j.connection_id = c.connection_id) AS jobs,
                  (SELECT count(*) FROM subscriptions s WHERE s.connection_id = c.connection_id) AS subscriptions,
                  (SELECT count(*) FROM connection_events e WHERE e.connection_id = c.connection_id) AS events,
                  (SELECT count(*) FROM sends s WHERE s.connection_id = c.connection_id) AS sends
             FROM mailbox_connections c WHERE c.connection_id = $1::uuid""", t.connection_id)
    return dict(row)


async def own_view_ok(stack: Stack, token: str, op: Op, t: Tenant) -> None:
    """Positive control for the reads: the same call on the caller's own record answers 200 with it."""
    target = getattr(t, op.target)
    status, body = await call(stack, token, op.method, op.url(t, target), op.body(t, target))
    assert status == 200, (op.name, status, body)
    if op.name in ("connection", "idle_connection"):
        assert body["account_id"] == t.account_id and body["user_id"] == target
        assert body["status"] == ("connected" if op.name == "connection" else "never_connected")
    elif op.name == "engagements":
        assert len(body["engagements"]) == 1 and body["engagements"][0]["internet_message_id"] == t.imid
    elif op.name == "backsync":
        assert body["backsync_id"] == t.backsync_id and body["connection_id"] == t.connection_id
    elif op.name == "diagnose_get":
        assert body["decision"] == "matched"
    elif op.name == "send":
        assert body["send_id"] == t.send_id and body["user_id"] == t.user_id


def test_ops_cover_every_api_route(stack_processes: Stack):
    """A route added later without a case here fails this test, so the property keeps covering the API."""
    from services.core.adapters.config import load_settings
    from services.subscriber.app import create_app

    app = create_app(load_settings(stack_processes.env, service="subscriber"))
    routes = {(r.method, re.sub(r"\{[^}]+\}", "{}", r.resource.canonical)) for r in app.router.routes()
              if r.resource is not None and r.resource.canonical.startswith("/api/") and r.method != "HEAD"}
    covered = {(op.method, op.path.split("?")[0].replace("{id}", "{}")) for op in OPS}
    assert routes, "no API routes found"
    assert routes <= covered, f"API routes without a scope case: {sorted(routes - covered)}"


@settings(max_examples=EXAMPLES, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(data=st.data(), ttl_s=st.integers(min_value=60, max_value=24 * 3600))
async def test_one_accounts_token_never_reaches_another_account(world: World, data: Any, ttl_s: int):
    stack, tenants = world.stack, world.tenants
    x_index = data.draw(st.integers(0, ACCOUNTS), label="caller (the last index: an account with no data)")
    y_index = data.draw(st.sampled_from([i for i in range(ACCOUNTS) if i != x_index]), label="owner of the data")
    ops = data.draw(st.permutations(OPS), label="calls")
    y = tenants[y_index]
    x_account = tenants[x_index].account_id if x_index < ACCOUNTS else stack.new_account()
    x_token = api_token(stack, x_account, ttl_s=ttl_s)
    operator = stack.env["MAILSYNC_API_TOKEN"]

    for op in ops:
        target = getattr(y, op.target)
        before = await snapshot(stack, y)
        status, body = await call(stack, x_token, op.method, op.url(y, target), op.body(y, target))
        after = await snapshot(stack, y)
        # Exactly what an id that does not exist gets, body included.
        unknown = op.fresh_unknown_id()
        u_status, u_body = await call(stack, x_token, op.method, op.url(y, unknown), op.body(y, unknown))
        assert (status, body) == (404, _swap(u_body, unknown, target)), (op.name, status, body)
        assert u_status == 404
        assert after == before, f"{op.name} with another account's token changed {y.account_id}'s data"
        if x_index < ACCOUNTS and not op.writes:
            await own_view_ok(stack, x_token, op, tenants[x_index])
        if not op.writes:
            await own_view_ok(stack, operator, op, y)  # the operator's token sees every account


def _swap(body: Any, old: str, new: str) -> Any:
    return json.loads(json.dumps(body).replace(old, new))


async def test_own_token_acts_on_own_account_and_the_operator_on_any(world: World, db):
    """Positive control for the writes (run after the property: they change the account's state)."""
    stack, (x, y) = world.stack, world.tenants[:2]
    token = api_token(stack, x.account_id)
    status, body = await call(stack, token, "POST", f"/api/v1/connections/{x.connection_id}/sync")
    assert status == 202, body
    jobs = await db.fetchval("SELECT count(*) FROM sync_jobs WHERE connection_id = $1::uuid", x.connection_id)
    status, body = await call(stack, token, "POST", f"/api/v1/connections/{x.connection_id}/backsyncs",
                              OPS[7].body(x, x.connection_id))
    assert status == 202, body
    assert await db.fetchval("SELECT count(*) FROM sync_jobs WHERE connection_id = $1::uuid",
                             x.connection_id) == jobs + 1
    status, body = await call(stack, token, "GET", f"/api/v1/backsyncs/{body['backsync_id']}")
    assert status == 200 and body["connection_id"] == x.connection_id
    sends = await db.fetchval("SELECT count(*) FROM sends WHERE user_id = $1", x.user_id)
    status, body = await call(stack, token, "POST", f"/api/v1/users/{x.user_id}/send", OPS[-1].body(x, x.user_id))
    assert status == 202, body
    assert await db.fetchval("SELECT count(*) FROM sends WHERE user_id = $1", x.user_id) == sends + 1
    status, body = await call(stack, token, "POST", f"/api/v1/connections/{x.connection_id}/disconnect")
    assert status == 200 and body["status"] == "disconnected" and body["account_id"] == x.account_id
    status, body = await call(stack, stack.env["MAILSYNC_API_TOKEN"], "POST",
                              f"/api/v1/connections/{y.connection_id}/disconnect")
    assert status == 200 and body["status"] == "disconnected" and body["account_id"] == y.account_id


def _claims_cases(stack: Stack, account: str) -> list[tuple[str, str, str]]:
    now = int(time.time())
    secret = stack.env["MAILSYNC_SESSION_SECRET"]
    return [
        ("expired", api_token(stack, account, ttl_s=-30), "expired"),
        ("25 h ahead", api_token(stack, account, ttl_s=25 * 3600), "24 hours"),
        ("session JWT (no aud)", jwt.encode({"sub": "someone", "account_id": account, "exp": now + 600}, secret,
                                            algorithm="HS256"), "session token"),
        ("wrong aud", api_token(stack, account, aud="mailsync-web"), "audience"),
        ("aud list without ours", api_token(stack, account, aud=["other"]), "audience"),
        ("no account_id", jwt.encode({"aud": "mailsync-api", "exp": now + 600}, secret, algorithm="HS256"),
         "account_id"),
        ("empty account_id", api_token(stack, ""), "account_id"),
        ("no exp", jwt.encode({"aud": "mailsync-api", "account_id": account}, secret, algorithm="HS256"), "exp"),
        ("other secret", api_token(stack, account, secret="not-the-secret-" + "x" * 32), "not valid"),
        ("alg none", jwt.encode({"aud": "mailsync-api", "account_id": account, "exp": now + 600}, None,
                                algorithm="none"), "not valid"),
        ("operator token with junk", stack.env["MAILSYNC_API_TOKEN"] + "x", "bearer token"),
    ]


async def test_bad_api_tokens_are_401_with_the_reason(stack: Stack):
    account = stack.new_account()
    mailbox = await stack.new_mailbox(account, connect=False)
    path = f"/api/v1/users/{mailbox.user_id}/connection"
    for name, token, reason in _claims_cases(stack, account):
        status, body = await call(stack, token, "GET", path)
        assert status == 401, (name, status, body)
        assert body["error"]["code"] == "unauthorized" and reason in body["error"]["message"], (name, body)
    # Positive controls: a token for exactly 24 h and one for a minute are accepted.
    for ttl in (24 * 3600, 60):
        status, body = await call(stack, api_token(stack, account, ttl_s=ttl), "GET", path)
        assert status == 200 and body["user_id"] == mailbox.user_id, (ttl, body)

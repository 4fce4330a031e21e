"""Issue 10, finding 1 replayed against the running stack: nobody can attach a mailbox that is not theirs.

User A starts the OAuth flow, keeps the authorize link and has someone else finish it; or signs in with
someone else's mailbox. Each refusal has a positive control beside it: the same steps done legitimately
(A's own browser, A's own mailbox) do connect, so "nothing happened" cannot pass by accident."""

from __future__ import annotations

import hashlib
import re
import uuid
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import pytest

from services.core.domain import events
from tests.support.stack import Mailbox, Stack
from tests.support.stack import browser as stack_browser

pytestmark = [pytest.mark.e2e]

START = "/oauth/microsoft365/start"
NONCE = "mailsync_oauth_"  # + the state id


def nonces(resp: aiohttp.ClientResponse) -> list[str]:
    return [name for name in resp.cookies if name.startswith(NONCE)]


def browser() -> aiohttp.ClientSession:
    return stack_browser()  # cookies for 127.0.0.1; trusts the local CA


async def connection(stack: Stack, user_id: str) -> dict[str, Any]:
    status, view = await stack.api("GET", f"/api/v1/users/{user_id}/connection")
    assert status == 200, view
    return dict(view)


async def outsider(stack: Stack, *, auto_consent: bool = True) -> Mailbox:
    """A Microsoft 365 mailbox of another organisation: in no directory of any mailsync account."""
    graph_id, tenant = str(uuid.uuid4()), str(uuid.uuid4())
    address = f"victim-{uuid.uuid4().hex[:8]}@othercorp.example"
    await stack.sandbox("POST", "/sandbox/mailboxes", {
        "user_id": graph_id, "tenant_id": tenant, "address": address, "aliases": [], "display_name": "Victim",
        "auto_consent": auto_consent})
    return Mailbox(user_id="", account_id="", graph_id=graph_id, address=address, tenant_id=tenant)


async def sandbox_subscriptions(stack: Stack, graph_id: str) -> list[dict[str, Any]]:
    subs = await stack.sandbox("GET", "/sandbox/subscriptions")
    items = subs["value"] if isinstance(subs, dict) else subs
    return [s for s in items if graph_id in s["resource"]]


async def authorize_link(stack: Stack, session_browser: aiohttp.ClientSession, mailbox: Mailbox,
                         login_hint: str) -> str:
    """What the attacker does: start as A (with A's session and CSRF token) and keep the Location."""
    session = stack.session_token(mailbox.user_id, mailbox.account_id)
    async with session_browser.get(f"{stack.api_url}{START}", allow_redirects=False, params={
            "session": session, "csrf": stack.csrf(session), "login_hint": login_hint}) as resp:
        assert resp.status == 302, await resp.text()
        location = resp.headers["Location"]
    assert location.startswith(stack.sandbox_url)
    return location


async def test_a_link_finished_in_another_browser_connects_nothing(stack: Stack):
    account = stack.new_account()
    a = await stack.new_mailbox(account, connect=False)
    victim = await outsider(stack)
    async with browser() as attackers:
        link = await authorize_link(stack, attackers, a, login_hint=victim.address)
    async with browser() as victims, victims.get(link) as resp:  # no session of A, no nonce of A's start
        page = await resp.text()
        assert resp.status == 403, page
        assert "started in another browser" in page and "did not connect" in page
        assert "/oauth/microsoft365/callback" in str(resp.url)
    view = await connection(stack, a.user_id)
    assert view["status"] == "never_connected" and view["connection_id"] is None, view
    assert await sandbox_subscriptions(stack, victim.graph_id) == []


async def test_a_link_finished_in_another_browser_with_the_right_mailbox_still_connects_nothing(stack: Stack):
    # Even A's own mailbox: the callback trusts only the browser that holds the start's nonce.
    account = stack.new_account()
    a = await stack.new_mailbox(account, connect=False)
    async with browser() as first:
        link = await authorize_link(stack, first, a, login_hint=a.address)
    async with browser() as second, second.get(link) as resp:
        assert resp.status == 403
    assert (await connection(stack, a.user_id))["status"] == "never_connected"


async def test_positive_control_the_browser_that_started_connects_its_own_mailbox(stack: Stack, db):
    account = stack.new_account()
    a = await stack.new_mailbox(account, connect=False)
    async with browser() as own:
        session = stack.session_token(a.user_id, account)
        async with own.get(f"{stack.api_url}{START}", allow_redirects=False, params={
                "session": session, "csrf": stack.csrf(session), "login_hint": a.address}) as resp:
            assert resp.status == 302
            (name,) = nonces(resp)
            cookie = resp.cookies[name]
            link = resp.headers["Location"]
        # The nonce cookie: HttpOnly, SameSite=Lax, sent to the callback only; its hash is what is stored.
        assert cookie["httponly"] and cookie["samesite"] == "Lax" and cookie["path"] == "/oauth/microsoft365/callback"
        assert bool(cookie["secure"]) == stack.api_url.startswith("https://")  # Secure whenever pages are https
        stored = await db.fetchval("SELECT nonce_hash FROM oauth_states WHERE user_id = $1", a.user_id)
        assert stored == hashlib.sha256(cookie.value.encode()).hexdigest()
        second = await authorize_link(stack, own, a, login_hint=a.address)  # another tab of the same browser
        async with own.get(link) as resp:
            assert resp.status == 200 and "notice=connected" in str(resp.url), resp.url
        async with own.get(second) as resp:  # both flows complete: each state has its own nonce cookie
            assert resp.status == 200 and "notice=connected" in str(resp.url), resp.url
    view = await connection(stack, a.user_id)
    assert view["status"] == "connected" and view["mailbox_address"] == a.address
    assert await sandbox_subscriptions(stack, a.graph_id)


async def test_signing_in_with_someone_elses_mailbox_is_a_mailbox_mismatch(stack: Stack):
    account = stack.new_account()
    a = await stack.new_mailbox(account, connect=False)
    victim = await outsider(stack)
    async with browser() as own:
        link = await authorize_link(stack, own, a, login_hint=victim.address)
        async with own.get(link) as resp:  # A's browser, A's nonce: only the mailbox is wrong
            page = await resp.text()
            assert resp.status == 200 and "notice=mailbox_mismatch" in str(resp.url), resp.url
    assert f"You signed in as {victim.address}; this account is {a.address}&#39;s" in page  # Jinja2's escape
    view = await connection(stack, a.user_id)
    assert view["status"] == "never_connected" and view["connection_id"] is None, view
    assert await sandbox_subscriptions(stack, victim.graph_id) == []  # the exchange's tokens were dropped


async def test_a_mismatch_leaves_a_working_connection_untouched(stack: Stack, db):
    account = stack.new_account()
    a = await stack.new_mailbox(account)  # connected with A's own mailbox (positive control)
    before = await db.fetchrow("SELECT connected_at, graph_user_id, mailbox_address FROM mailbox_connections"
                               " WHERE user_id = $1", a.user_id)
    victim = await outsider(stack)
    async with browser() as own:
        link = await authorize_link(stack, own, a, login_hint=victim.address)
        async with own.get(link) as resp:
            assert "notice=mailbox_mismatch" in str(resp.url), resp.url
    view = await connection(stack, a.user_id)
    assert view["status"] == "connected" and view["connection_id"] == a.connection_id
    assert view["mailbox_address"] == a.address and view["subscriptions"]
    after = await db.fetchrow("SELECT connected_at, graph_user_id, mailbox_address FROM mailbox_connections"
                              " WHERE user_id = $1", a.user_id)
    assert after == before
    assert await sandbox_subscriptions(stack, victim.graph_id) == []


async def test_signing_in_as_someone_else_on_the_sign_in_page_is_a_mailbox_mismatch(stack: Stack):
    # No login_hint trick: the person types another address on Microsoft's page.
    account = stack.new_account()
    a = await stack.new_mailbox(account, connect=False, auto_consent=False)
    victim = await outsider(stack, auto_consent=False)
    async with browser() as own:
        link = await authorize_link(stack, own, a, login_hint=a.address)
        url = await sign_in(stack, own, link, login=victim.address)
    assert "notice=mailbox_mismatch" in url
    assert (await connection(stack, a.user_id))["status"] == "never_connected"


async def sign_in(stack: Stack, session_browser: aiohttp.ClientSession, link: str, *, login: str,
                  action: str = "accept") -> str:
    """Microsoft's sign-in page (the sandbox's): type `login`, press Accept or Cancel. Returns where it lands."""
    async with session_browser.get(link) as resp:
        form = await resp.text()
        assert resp.status == 200, form
    flow = re.search(r'name="flow" value="([^"]+)"', form)
    assert flow, form
    async with session_browser.post(f"{stack.sandbox_url}{urlsplit(link).path}",
                                    data={"flow": flow.group(1), "login": login, "action": action}) as resp:
        await resp.read()
        return str(resp.url)


async def test_an_alias_of_the_directory_counts_as_the_users_mailbox(stack: Stack):
    # Positive control of the address check's other branch: the mailbox is one of the user's aliases.
    account = stack.new_account()
    mailbox = await outsider(stack)
    user_id = f"user-{uuid.uuid4().hex[:10]}"
    await stack.publish_directory(events.envelope("user.upserted", {
        "user_id": user_id, "account_id": account, "email": f"{user_id}@{account}.example",
        "aliases": [mailbox.address.upper()]}))
    await stack.wait_row("SELECT 1 FROM users WHERE user_id = $1", user_id, what="user")
    mailbox.user_id, mailbox.account_id = user_id, account
    async with browser() as own:
        link = await authorize_link(stack, own, mailbox, login_hint=mailbox.address)
        async with own.get(link) as resp:
            assert "notice=connected" in str(resp.url), resp.url
    view = await connection(stack, user_id)
    assert view["status"] == "connected" and view["mailbox_address"] == mailbox.address


async def test_a_user_without_a_directory_address_cannot_connect(stack: Stack, db):
    account = stack.new_account()
    victim = await outsider(stack)
    user_id = f"user-{uuid.uuid4().hex[:10]}"  # a session for a user the directory does not know
    session = stack.session_token(user_id, account)
    async with browser() as own, own.get(f"{stack.api_url}{START}", params={
            "session": session, "csrf": stack.csrf(session), "login_hint": victim.address}) as resp:
        page = await resp.text()
        assert resp.status == 200 and "notice=not_in_directory" in str(resp.url), resp.url
    assert "no email address in your organisation" in page
    assert await db.fetchval("SELECT count(*) FROM oauth_states WHERE user_id = $1", user_id) == 0
    assert await db.fetchval("SELECT count(*) FROM mailbox_connections WHERE user_id = $1", user_id) == 0


async def test_a_user_deleted_from_the_directory_during_sign_in_connects_nothing(stack: Stack):
    account = stack.new_account()
    a = await stack.new_mailbox(account, connect=False)
    async with browser() as own:
        link = await authorize_link(stack, own, a, login_hint=a.address)
        await stack.publish_directory(events.envelope("user.deleted", {"user_id": a.user_id, "account_id": account}))
        await stack.wait_row("SELECT 1 FROM users WHERE user_id = $1 AND deleted_at IS NOT NULL", a.user_id,
                             what="user deleted")
        async with own.get(link) as resp:
            assert "notice=not_in_directory" in str(resp.url), resp.url
    assert (await connection(stack, a.user_id))["status"] == "never_connected"


# --- item 5: Cancel at Microsoft changes nothing -------------------------------------------------------


async def test_cancel_at_microsoft_leaves_a_working_connection_connected(stack: Stack):
    account = stack.new_account()
    a = await stack.new_mailbox(account, connect=False, auto_consent=False)
    async with browser() as own:
        # Positive control: Accept on the same page connects.
        url = await sign_in(stack, own, await authorize_link(stack, own, a, login_hint=a.address), login=a.address)
        assert "notice=connected" in url, url
        view = await connection(stack, a.user_id)
        assert view["status"] == "connected"
        url = await sign_in(stack, own, await authorize_link(stack, own, a, login_hint=a.address), login=a.address,
                            action="cancel")
        assert "notice=cancelled" in url, url
        async with own.get(f"{stack.api_url}/settings/email?notice=cancelled") as resp:
            assert "You cancelled at Microsoft 365; nothing changed." in await resp.text()
    after = await connection(stack, a.user_id)
    assert after["status"] == "connected" and after["reason"] is None and after["error_code"] is None, after
    assert after["status_changed_at"] == view["status_changed_at"]


async def test_cancel_before_ever_connecting_stays_never_connected(stack: Stack):
    account = stack.new_account()
    a = await stack.new_mailbox(account, connect=False, auto_consent=False)
    async with browser() as own:
        url = await sign_in(stack, own, await authorize_link(stack, own, a, login_hint=a.address), login=a.address,
                            action="cancel")
    assert "notice=cancelled" in url, url
    assert (await connection(stack, a.user_id))["status"] == "never_connected"


# --- item 4: starting the flow needs the CSRF token ----------------------------------------------------


async def test_start_without_the_csrf_token_starts_nothing(stack: Stack, db):
    account = stack.new_account()
    a = await stack.new_mailbox(account, connect=False)
    session = stack.session_token(a.user_id, account)
    async with browser() as own:
        async with own.get(f"{stack.api_url}/settings/email", params={"session": session}) as resp:
            page = await resp.text()  # the cookie is set: what a cross-site request would ride on
        for params in ({}, {"csrf": "forged"}, {"csrf": stack.csrf(stack.session_token(a.user_id, account, 60))}):
            async with own.get(f"{stack.api_url}{START}", params=params, allow_redirects=False) as resp:
                assert resp.status == 403, (params, resp.status)
                assert not nonces(resp)
        assert await db.fetchval("SELECT count(*) FROM oauth_states WHERE user_id = $1", a.user_id) == 0
        # Positive controls: the page's token starts it, by link and by the Connect form.
        csrf = re.search(r'name="csrf" value="([0-9a-f]+)"', page)
        assert csrf
        async with own.get(f"{stack.api_url}{START}", params={"csrf": csrf.group(1)},
                           allow_redirects=False) as resp:
            assert resp.status == 302 and resp.headers["Location"].startswith(stack.sandbox_url)
        async with own.post(f"{stack.api_url}/settings/email/connect", data={"csrf": csrf.group(1)},
                            allow_redirects=False) as resp:
            assert resp.status == 302 and resp.headers["Location"].startswith(stack.sandbox_url)
            assert nonces(resp)
        async with own.post(f"{stack.api_url}/settings/email/connect", data={"csrf": "forged"},
                            allow_redirects=False) as resp:
            assert resp.status == 403
    assert await db.fetchval("SELECT count(*) FROM oauth_states WHERE user_id = $1", a.user_id) == 2


# --- item 6: oauth_states rows do not pile up ----------------------------------------------------------


async def test_old_oauth_states_are_purged_when_a_flow_starts(stack: Stack, db):
    account = stack.new_account()
    a = await stack.new_mailbox(account, connect=False)
    old_ids = [f"old-{uuid.uuid4().hex}" for _ in range(3)]
    for state_id, used in zip(old_ids, (False, True, False), strict=True):
        await db.execute(
            "INSERT INTO oauth_states (state_id, user_id, account_id, code_verifier, expires_at, used_at)"
            " VALUES ($1, $2, $3, 'v', now() - interval '2 hours', CASE WHEN $4 THEN now() END)",
            state_id, a.user_id, account, used)
    recent = f"recent-{uuid.uuid4().hex}"  # expired minutes ago: kept a while (the page may still name it)
    await db.execute("INSERT INTO oauth_states (state_id, user_id, account_id, code_verifier, expires_at)"
                     " VALUES ($1, $2, $3, 'v', now() - interval '5 minutes')", recent, a.user_id, account)
    async with browser() as own:
        await authorize_link(stack, own, a, login_hint=a.address)
    left = {r["state_id"] for r in await db.fetch("SELECT state_id FROM oauth_states WHERE user_id = $1", a.user_id)}
    assert not left & set(old_ids), left
    assert recent in left and len(left) == 2  # the recent one and the flow just started


async def test_the_purge_is_bounded_per_start(stack: Stack, db):
    account = stack.new_account()
    a = await stack.new_mailbox(account, connect=False)
    await db.execute(
        "INSERT INTO oauth_states (state_id, user_id, account_id, code_verifier, expires_at)"
        " SELECT 'bulk-' || g || '-' || $1, $1, $2, 'v', now() - interval '3 hours' FROM generate_series(1, 600) g",
        a.user_id, account)
    old = "SELECT count(*) FROM oauth_states WHERE expires_at < now() - interval '1 hour'"
    before = await db.fetchval(old)
    async with browser() as own:
        await authorize_link(stack, own, a, login_hint=a.address)
        assert await db.fetchval(old) == before - 500  # one start deletes at most 500 rows
        await authorize_link(stack, own, a, login_hint=a.address)
    assert await db.fetchval(old) == max(0, before - 1000)

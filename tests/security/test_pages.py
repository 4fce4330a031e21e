"""The Email Authentication page against the running stack: it says whose settings it shows, a `?session=` for
another user asks before replacing the browser's session, and every page carries the headers that keep it
from being framed, from loading anything but its own style, and from leaking its URL as a Referer."""

from __future__ import annotations

import base64
import hashlib
import re
import uuid
from typing import Any

import aiohttp
import pytest

from tests.support.stack import Stack
from tests.support.stack import browser as stack_browser

pytestmark = [pytest.mark.e2e]

PAGE = "/settings/email"
START = "/oauth/microsoft365/start"


def browser() -> aiohttp.ClientSession:
    return stack_browser()  # cookies for 127.0.0.1; trusts the local CA


def text_of(html: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", "", html)).replace("&#x27;", "'").replace("&#39;", "'")


def form_fields(html: str, action: str) -> dict[str, str]:
    form = re.search(rf'<form method="post" action="{re.escape(action)}">(.*?)</form>', html, re.S)
    assert form, html
    return dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', form.group(1)))


async def sign_in_as(stack: Stack, own: aiohttp.ClientSession, user_id: str, account: str) -> str:
    async with own.get(f"{stack.api_url}{PAGE}", params={"session": stack.session_token(user_id, account)}) as resp:
        assert resp.status == 200 and str(resp.url).endswith(PAGE), resp.url
        return await resp.text()


async def whose(stack: Stack, own: aiohttp.ClientSession) -> str:
    async with own.get(f"{stack.api_url}{PAGE}") as resp:
        assert resp.status == 200
        found = re.search(r'id="whoami">(.*?)</p>', await resp.text())
    assert found
    return text_of(found.group(1))


async def test_the_page_says_whose_settings_it_shows(stack: Stack):
    account = stack.new_account()
    a = await stack.new_mailbox(account, connect=False)
    async with browser() as own:
        await sign_in_as(stack, own, a.user_id, account)
        assert await whose(stack, own) == f"Settings of {a.address}"
    stranger = f"user-{uuid.uuid4().hex[:8]}"
    async with browser() as other:
        await sign_in_as(stack, other, stranger, account)
        assert await whose(stack, other) == f"Settings of user {stranger} (no directory address)"


async def test_a_session_link_for_another_user_asks_before_switching(stack: Stack):
    account = stack.new_account()
    a, b = await stack.new_mailbox(account, connect=False), await stack.new_mailbox(account, connect=False)
    async with browser() as own:
        await sign_in_as(stack, own, a.user_id, account)
        b_session = stack.session_token(b.user_id, account)
        async with own.get(f"{stack.api_url}{PAGE}", params={"session": b_session}, allow_redirects=False) as resp:
            assert resp.status == 200  # a question, not a redirect that replaced the cookie
            question = await resp.text()
            assert "mailsync_session" not in resp.cookies
        assert f"You are signed in as {a.address}; this link is for {b.address}. Switch?" in text_of(question)
        assert await whose(stack, own) == f"Settings of {a.address}"  # nothing changed yet

        fields = form_fields(question, "/settings/email/switch")
        assert fields["session"] == b_session and fields["then"] == "page"
        for forged in ("", "0" * 64, stack.csrf(b_session)):
            async with own.post(f"{stack.api_url}/settings/email/switch", data={**fields, "csrf": forged},
                                allow_redirects=False) as resp:
                assert resp.status == 403, forged
        assert await whose(stack, own) == f"Settings of {a.address}"

        # Positive control: the confirmation's own form switches.
        async with own.post(f"{stack.api_url}/settings/email/switch", data=fields) as resp:
            assert resp.status == 200 and str(resp.url).endswith(PAGE)
        assert await whose(stack, own) == f"Settings of {b.address}"


async def test_the_switch_form_only_works_in_the_browser_it_was_shown_in(stack: Stack):
    # A cross-site page can make the victim's browser post the attacker's own confirmation form (fetched in the
    # attacker's browser): its token is bound to the session it was shown to, so the victim's browser refuses it.
    account = stack.new_account()
    victim, attacker = await stack.new_mailbox(account, connect=False), await stack.new_mailbox(account, connect=False)
    async with browser() as attackers:
        await sign_in_as(stack, attackers, f"user-{uuid.uuid4().hex[:8]}", account)  # another identity of theirs
        async with attackers.get(f"{stack.api_url}{PAGE}",
                                 params={"session": stack.session_token(attacker.user_id, account)}) as resp:
            fields = form_fields(await resp.text(), "/settings/email/switch")
    async with browser() as victims:
        await sign_in_as(stack, victims, victim.user_id, account)
        async with victims.post(f"{stack.api_url}/settings/email/switch", data=fields,
                                allow_redirects=False) as resp:
            assert resp.status == 403
        assert await whose(stack, victims) == f"Settings of {victim.address}"
    async with browser() as fresh, fresh.post(f"{stack.api_url}/settings/email/switch", data=fields,
                                              allow_redirects=False) as resp:
        assert resp.status == 403  # no session at all: nothing to confirm a switch from


async def test_the_same_user_or_a_fresh_browser_takes_the_session_link_at_once(stack: Stack):
    account = stack.new_account()
    a = await stack.new_mailbox(account, connect=False)
    async with browser() as own:
        await sign_in_as(stack, own, a.user_id, account)  # a fresh browser: straight in
        renewed = stack.session_token(a.user_id, account, ttl_s=7200)
        async with own.get(f"{stack.api_url}{PAGE}", params={"session": renewed}, allow_redirects=False) as resp:
            assert resp.status == 302 and resp.cookies["mailsync_session"].value == renewed


async def test_a_start_link_for_another_user_asks_before_switching(stack: Stack, db):
    account = stack.new_account()
    a, b = await stack.new_mailbox(account, connect=False), await stack.new_mailbox(account, connect=False)
    async with browser() as own:
        await sign_in_as(stack, own, a.user_id, account)
        b_session = stack.session_token(b.user_id, account)
        async with own.get(f"{stack.api_url}{START}", allow_redirects=False, params={
                "session": b_session, "csrf": stack.csrf(b_session), "login_hint": b.address}) as resp:
            assert resp.status == 200
            question = await resp.text()
            assert not [name for name in resp.cookies if name.startswith("mailsync_")]  # no nonce, no session
        assert f"You are signed in as {a.address}; this link is for {b.address}. Switch?" in text_of(question)
        assert await db.fetchval("SELECT count(*) FROM oauth_states WHERE user_id = $1", b.user_id) == 0
        fields = form_fields(question, "/settings/email/switch")
        assert fields["then"] == "connect" and fields["login_hint"] == b.address
        async with own.post(f"{stack.api_url}/settings/email/switch", data=fields) as resp:  # switch, then connect
            assert resp.status == 200 and "notice=connected" in str(resp.url), resp.url
        assert await whose(stack, own) == f"Settings of {b.address}"
    _, view = await stack.api("GET", f"/api/v1/users/{b.user_id}/connection")
    assert view["status"] == "connected" and view["mailbox_address"] == b.address
    _, view = await stack.api("GET", f"/api/v1/users/{a.user_id}/connection")
    assert view["status"] == "never_connected"


# --- item 7: security headers ------------------------------------------------------------------------


def assert_page_headers(h: Any, html: str, stack: Stack) -> None:
    assert h.get("X-Frame-Options") == "DENY"
    assert h.get("Referrer-Policy") == "no-referrer"
    csp = {d.strip().split(" ", 1)[0]: d.strip() for d in h["Content-Security-Policy"].split(";") if d.strip()}
    assert csp["default-src"] == "default-src 'none'"
    assert csp["frame-ancestors"] == "frame-ancestors 'none'"
    assert csp["form-action"].split()[:2] == ["form-action", "'self'"]
    assert stack.sandbox_url in csp["form-action"]  # Connect's redirect to the identity platform
    assert "'unsafe-inline'" not in csp.get("style-src", "")
    # Scripts only from mailsync's own files (the settings page's progressive enhancement), never inline.
    assert csp.get("script-src") == "script-src 'self'" and not re.search(r"<script(?![^>]*\ssrc=)", html)
    styles = re.findall(r"<style>(.*?)</style>", html, re.S)
    assert styles and not re.search(r"\sstyle=", html)  # one inline stylesheet, no inline style attributes
    for style in styles:
        digest = base64.b64encode(hashlib.sha256(style.encode()).digest()).decode()
        assert f"'sha256-{digest}'" in csp["style-src"]


async def test_every_page_sends_csp_frame_and_referrer_headers(stack: Stack):
    account = stack.new_account()
    a, b = await stack.new_mailbox(account, connect=False), await stack.new_mailbox(account, connect=False)
    async with browser() as own:
        async with own.get(f"{stack.api_url}{PAGE}", params={"session": stack.session_token(a.user_id, account)},
                           allow_redirects=False) as resp:
            assert resp.status == 302 and resp.headers["Referrer-Policy"] == "no-referrer"  # its URL has the JWT
        async with own.get(f"{stack.api_url}{PAGE}") as resp:
            assert resp.content_type == "text/html" and resp.headers.get("Cache-Control") == "no-store"
            assert_page_headers(resp.headers, await resp.text(), stack)
        async with own.get(f"{stack.api_url}{PAGE}", params={"session": stack.session_token(b.user_id, account)}) \
                as resp:  # the switch question
            assert resp.content_type == "text/html"
            assert_page_headers(resp.headers, await resp.text(), stack)
        async with own.get(f"{stack.api_url}{START}") as resp:  # no CSRF token: refused with a page
            assert resp.status == 403 and resp.content_type == "text/html"
            assert_page_headers(resp.headers, await resp.text(), stack)
        async with own.get(f"{stack.api_url}/oauth/microsoft365/callback", params={"state": "x.y", "code": "c"}) \
                as resp:
            assert resp.status == 400 and resp.content_type == "text/html"
            assert_page_headers(resp.headers, await resp.text(), stack)
    async with browser() as fresh, fresh.get(f"{stack.api_url}{PAGE}") as resp:  # no session: plain text
        assert resp.status == 401
        assert resp.headers["X-Frame-Options"] == "DENY" and resp.headers["Referrer-Policy"] == "no-referrer"
        assert "frame-ancestors 'none'" in resp.headers["Content-Security-Policy"]

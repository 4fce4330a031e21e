"""Everything the support article asked a human for, self-served through the real stack over HTTP: import
older email (estimate first, then progress), Sync now with what it found, why an email is missing, the
administrator's page (403 for others, counts, filter, CSV), notices once per incident, CSRF on every form."""

from __future__ import annotations

import csv
import html as htmllib
import io
import json
import re
import time
from datetime import UTC, datetime, timedelta

import aiohttp
import jwt
import pytest

from services.core.application.coverage import MIN_POLL_ONLY
from tests.support.kafka_tail import Tail
from tests.support.stack import Mailbox, Stack, quiet
from tests.support.stack import browser as stack_browser
from tests.support.wait import wait_until

pytestmark = [pytest.mark.e2e]

PAGE = "/settings/email"


def ago(**delta: float) -> str:
    return (datetime.now(UTC) - timedelta(**delta)).strftime("%Y-%m-%dT%H:%M:%SZ")


def text_of(page: str) -> str:
    return htmllib.unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", page)))


def by_id(page: str, element_id: str) -> str:
    """The text of the element with this id (up to its closing tag of the same name)."""
    found = re.search(rf'<(\w+)[^>]*\sid="{re.escape(element_id)}"[^>]*>(.*?)</\1>', page, re.S)
    assert found, f"no #{element_id} in the page"
    return text_of(found.group(2)).strip()


def admin_token(stack: Stack, user_id: str, account: str, role: str = "admin") -> str:
    return jwt.encode({"sub": user_id, "account_id": account, "role": role, "exp": int(time.time()) + 3600},
                      stack.env["MAILSYNC_SESSION_SECRET"], algorithm="HS256")


class Tab:
    """A browser tab's worth of HTTP: the session cookie, the page's CSRF token, its forms."""

    def __init__(self, stack: Stack, http: aiohttp.ClientSession, token: str) -> None:
        self.stack, self.http, self.token = stack, http, token

    @classmethod
    async def open(cls, stack: Stack, http: aiohttp.ClientSession, token: str, path: str = PAGE) -> Tab:
        async with http.get(f"{stack.api_url}{path}", params={"session": token}) as resp:
            assert resp.status in (200, 403), resp.status
        return cls(stack, http, token)

    async def get(self, path: str = PAGE) -> tuple[int, str]:
        async with self.http.get(f"{self.stack.api_url}{path}") as resp:
            return resp.status, await resp.text()

    async def post(self, path: str, csrf: str | None = None, **fields: str) -> tuple[int, str, str]:
        data = {"csrf": self.stack.csrf(self.token) if csrf is None else csrf, **fields}
        async with self.http.post(f"{self.stack.api_url}{path}", data=data) as resp:
            return resp.status, str(resp.url), await resp.text()


async def connected(stack: Stack, db) -> tuple[str, str, Mailbox]:
    account = stack.new_account()
    contact = await stack.add_contact(account, "known@client.example")
    await stack.wait_contact(contact)
    mailbox = await stack.new_mailbox(account)
    await quiet(stack, db, mailbox)
    return account, contact, mailbox


async def test_import_older_email_shows_the_estimate_then_progress_to_done(stack: Stack, db):
    account, _contact, mailbox = await connected(stack, db)
    await stack.sandbox("POST", "/sandbox/faults", {"notification_drop_rate": 1.0})  # only the import sees them
    try:
        for days in (3, 5, 9):
            await stack.deliver(mailbox, received_at=ago(days=days), **{"from": "known@client.example"})
        for days in (4, 6):
            await stack.deliver(mailbox, received_at=ago(days=days), **{"from": "stranger@elsewhere.example"})
    finally:
        await stack.sandbox("POST", "/sandbox/faults", {"reset": True})
    today = datetime.now(UTC).date()
    async with stack_browser(stack) as http:
        tab = await Tab.open(stack, http, stack.session_token(mailbox.user_id, account))
        status, url, page = await tab.post(f"{PAGE}/import", since=(today - timedelta(days=14)).isoformat(),
                                           until=(today - timedelta(days=2)).isoformat())
        assert status == 200 and "notice=estimate_queued" in url, url
        estimate = await stack.wait_row(
            "SELECT job_id FROM sync_jobs WHERE connection_id = $1::uuid AND kind = 'backsync' AND dry_run"
            " AND status = 'done'", mailbox.connection_id, what="the estimate", timeout=40)

        _, page = await tab.get()
        said = by_id(page, "import-words")
        assert said.startswith("About 5 emails, 3 with your contacts, from "), said
        assert 'id="import-start"' in page  # confirm comes only after the estimate
        assert await db.fetchval("SELECT count(*) FROM sync_jobs WHERE connection_id = $1::uuid AND kind = 'backsync'"
                                 " AND NOT dry_run", mailbox.connection_id) == 0  # nothing imported yet

        status, url, _ = await tab.post(f"{PAGE}/import", estimate=str(estimate["job_id"]))
        assert status == 200 and "notice=import_queued" in url, url
        job = await stack.wait_row("SELECT job_id FROM sync_jobs WHERE connection_id = $1::uuid AND kind = 'backsync'"
                                   " AND NOT dry_run", mailbox.connection_id, what="the import")
        # The page's script reads the progress as JSON (the session's own jobs only).
        status, body = await tab.get(f"{PAGE}/import/{job['job_id']}")
        progress = json.loads(body)
        assert status == 200 and progress["dry_run"] is False and progress["status"] in ("queued", "running", "done")

        async def imported() -> bool:
            row = await db.fetchrow("SELECT status, engagements_created FROM sync_jobs WHERE job_id = $1",
                                    job["job_id"])
            return row["status"] == "done" and row["engagements_created"] == 3

        await wait_until(imported, timeout=60, what="the import done with 3 engagements")
        _, page = await tab.get()
        words = by_id(page, "import-words")
        assert words.startswith("Done: 5 emails from ") and "3 added to your clients' timelines" in words, words
        assert re.search(r'<progress id="import-bar" value="5" max="5"', page), page

    # Someone else's import is not found, exactly like one that does not exist.
    other = await stack.new_mailbox(account, connect=False)
    async with stack_browser(stack) as http:
        tab = await Tab.open(stack, http, stack.session_token(other.user_id, account))
        status, body = await tab.get(f"{PAGE}/import/{job['job_id']}")
        assert status == 404 and '"not_found"' in body


async def test_sync_now_shows_when_and_what_the_last_sync_found(stack: Stack, db):
    account, _contact, mailbox = await connected(stack, db)
    before = await db.fetchval("SELECT last_synced_at FROM mailbox_connections WHERE connection_id = $1::uuid",
                               mailbox.connection_id)
    await stack.sandbox("POST", "/sandbox/faults", {"notification_drop_rate": 1.0})
    try:
        missed = await stack.deliver(mailbox, **{"from": "known@client.example"})
        async with stack_browser(stack) as http:
            tab = await Tab.open(stack, http, stack.session_token(mailbox.user_id, account))
            status, url, _ = await tab.post(f"{PAGE}/sync")
            assert status == 200 and "notice=sync_queued" in url
            await stack.wait_row("SELECT 1 FROM match_decisions WHERE message_key = $1 AND source = 'delta'",
                                 missed, what="the missed email found by the sync", timeout=40)
            await wait_until(lambda: db.fetchval(
                "SELECT last_synced_at > $2 AND poll_lease_until IS NULL FROM mailbox_connections"
                " WHERE connection_id = $1::uuid", mailbox.connection_id, before), what="the sync recorded")
            _, page = await tab.get()
            said = by_id(page, "last-sync")
            assert said.startswith("Last successful sync: ") and "Not yet" not in said
            assert ("In the last 24 hours syncs found 1 email that notifications had missed; 1 added to your "
                    "clients' timelines.") in said
    finally:
        await stack.sandbox("POST", "/sandbox/faults", {"reset": True})


async def test_a_mailbox_whose_notifications_are_dropped_shows_push_degraded_within_one_poll(stack: Stack, db):
    account, _contact, mailbox = await connected(stack, db)
    admin = await stack.new_mailbox(account, connect=False)
    await stack.sandbox("POST", "/sandbox/faults", {"notification_drop_rate": 1.0})
    try:
        imids = [await stack.deliver(mailbox, **{"from": "known@client.example"}) for _ in range(MIN_POLL_ONLY)]
        async with stack_browser(stack) as http:
            tab = await Tab.open(stack, http, stack.session_token(mailbox.user_id, account))
            _, page = await tab.get()
            assert 'id="push-degraded"' not in page  # healthy until the poll shows otherwise
            await tab.post(f"{PAGE}/sync")  # the hourly poll, now
            for imid in imids:
                await stack.wait_row("SELECT 1 FROM match_decisions WHERE message_key = $1 AND source = 'delta'",
                                     imid, what="the poll's find", timeout=40)
            _, page = await tab.get()
            counts = [dict(r) for r in await db.fetch(
                "SELECT d.source, d.occurred_at, d.decided_at, c.connected_at FROM match_decisions d"
                " JOIN mailbox_connections c USING (connection_id) WHERE d.connection_id = $1::uuid",
                mailbox.connection_id)]
            assert 'id="push-degraded"' in page, counts
            assert "Push delivery is degraded and the hourly poll is covering" in by_id(page, "push-degraded")
        async with stack_browser(stack) as http:
            tab = await Tab.open(stack, http, admin_token(stack, admin.user_id, account), "/admin/email")
            _, page = await tab.get("/admin/email")
            row = re.search(rf'<tr data-user="{mailbox.user_id}">(.*?)</tr>', page, re.S)
            assert row and "the hourly poll is covering" in text_of(row.group(1))
    finally:
        await stack.sandbox("POST", "/sandbox/faults", {"reset": True})


JUNK_HEADERS = """Received: from mail.client.example (10.0.0.1) by mx.example; {date}
From: Known Person <known@client.example>
To: {to}
Subject: Quarterly figures
Date: {date}
Message-ID: {imid}
MIME-Version: 1.0
Content-Type: text/plain
"""


async def test_why_is_an_email_missing_answers_in_plain_words(stack: Stack, db):
    account, _contact, mailbox = await connected(stack, db)
    imid = await stack.deliver(mailbox, folder="junkemail", **{"from": "known@client.example"})
    await stack.wait_row("SELECT 1 FROM match_decisions WHERE message_key = $1", imid, what="the junk decision")
    headers = JUNK_HEADERS.format(date=datetime.now(UTC).strftime("%a, %d %b %Y %H:%M:%S +0000"),
                                  to=mailbox.address, imid=imid)
    async with stack_browser(stack) as http:
        tab = await Tab.open(stack, http, stack.session_token(mailbox.user_id, account))
        status, _, page = await tab.post(f"{PAGE}/diagnose", headers=headers)
        assert status == 200
        assert by_id(page, "answer-headline") == "mailsync left this email out on purpose."
        assert by_id(page, "answer-todo").startswith("What to do: It was in Junk Email. In Outlook, mark it as Not")
        # A Message-ID alone works too; an unknown one is "not seen", with Sync now as the thing to do.
        status, _, page = await tab.post(f"{PAGE}/diagnose", headers="<never-arrived@client.example>")
        assert status == 200 and by_id(page, "answer-headline") == "mailsync has not seen this email."
        assert "Press Sync now" in by_id(page, "answer-todo")
        # Nonsense is a clear 400 on the page, never a 500.
        status, _, page = await tab.post(f"{PAGE}/diagnose", headers="no headers here")
        assert status == 400 and "mailsync could not read that" in by_id(page, "answer-headline")


async def test_forms_refuse_a_missing_or_wrong_csrf_token(stack: Stack, db):
    account, _contact, mailbox = await connected(stack, db)
    today = datetime.now(UTC).date().isoformat()
    async with stack_browser(stack) as http:
        tab = await Tab.open(stack, http, stack.session_token(mailbox.user_id, account))
        before = await db.fetchval("SELECT next_poll_at FROM mailbox_connections WHERE connection_id = $1::uuid",
                                   mailbox.connection_id)
        other = stack.csrf(stack.session_token(mailbox.user_id, account, ttl_s=7200))  # another session's token
        for csrf in ("", "0" * 64, other):
            for path, fields in ((f"{PAGE}/sync", {}), (f"{PAGE}/import", {"since": today, "until": today}),
                                 (f"{PAGE}/diagnose", {"headers": "<x@y.example>"})):
                status, _, body = await tab.post(path, csrf=csrf, **fields)
                assert status == 403 and "This form has expired" in body, (path, status)
        assert await db.fetchval("SELECT next_poll_at FROM mailbox_connections WHERE connection_id = $1::uuid",
                                 mailbox.connection_id) == before
        assert await db.fetchval("SELECT count(*) FROM sync_jobs WHERE connection_id = $1::uuid AND kind = 'backsync'",
                                 mailbox.connection_id) == 0
        status, url, _ = await tab.post(f"{PAGE}/sync")  # the positive control: the page's own token works
        assert status == 200 and "notice=sync_queued" in url


async def test_the_admin_page_is_for_administrators_with_counts_filter_and_csv(stack: Stack, db):
    account = stack.new_account()
    a = await stack.new_mailbox(account)
    b = await stack.new_mailbox(account, connect=False)
    c = await stack.new_mailbox(account, connect=False)
    async with stack_browser(stack) as http:
        tab = await Tab.open(stack, http, stack.session_token(b.user_id, account), "/admin/email")
        for path in ("/admin/email", "/admin/email.csv"):
            status, body = await tab.get(path)
            assert status == 403 and "Administrators only" in body and a.address not in body
    async with stack_browser(stack) as http:
        tab = await Tab.open(stack, http, admin_token(stack, c.user_id, account), "/admin/email")
        status, page = await tab.get("/admin/email")
        assert status == 200
        assert by_id(page, "count-connected") == "Connected: 1"
        assert by_id(page, "count-never_connected") == "Not connected: 2"
        assert re.search(rf'<tr data-user="{a.user_id}">.*?Connected.*?user', page, re.S)
        assert "Connect the mailbox from the Email settings page." in page
        _, only = await tab.get("/admin/email?status=never_connected")
        assert b.user_id in only and c.user_id in only and f'data-user="{a.user_id}"' not in only
        async with http.get(f"{stack.api_url}/admin/email.csv") as resp:
            assert resp.status == 200 and resp.content_type == "text/csv"
            assert "attachment" in resp.headers["Content-Disposition"]
            rows = list(csv.DictReader(io.StringIO(await resp.text())))
        assert {r["user_id"]: r["status"] for r in rows} == {
            a.user_id: "connected", b.user_id: "never_connected", c.user_id: "never_connected"}
        assert all(r["mode"] == "user" for r in rows)
        # Another account's users never appear.
        stranger = await stack.new_mailbox(stack.new_account(), connect=False)
        _, page = await tab.get("/admin/email")
        assert stranger.user_id not in page


async def test_a_password_reset_is_one_notice_and_reconnecting_resolves_it(stack: Stack, db):
    tail = await Tail(stack.env["MAILSYNC_KAFKA_BOOTSTRAP"], "mailsync.notices.v1").start()
    await stack.sandbox("POST", "/sandbox/faults", {"access_token_lifetime_s": 120})
    try:
        account = stack.new_account()
        mailbox = await stack.new_mailbox(account)
        admin = await stack.new_mailbox(account, connect=False)
        await stack.sandbox("POST", f"/sandbox/users/{mailbox.graph_id}/revoke", {"reason": "password_reset"})
        await stack.deliver(mailbox, **{"from": "someone@client.example"})  # the next Graph call meets it
        opened = await tail.wait_for(type="notice.action_required", user_id=mailbox.user_id, timeout=40)
        assert opened["status"] == "reconnect_required" and opened["error_code"] == "AADSTS50173"
        assert opened["connection_id"] == mailbox.connection_id and opened["account_id"] == account
        assert opened["action_url"] == f"{stack.env['MAILSYNC_APP_URL']}/settings/email"
        # More failing work for the same incident (a Sync now is refused, more mail arrives): no second notice.
        await stack.deliver(mailbox, **{"from": "someone.else@client.example"})
        status, _ = await stack.api("POST", f"/api/v1/connections/{mailbox.connection_id}/sync")
        assert status == 409
        async with stack_browser(stack) as http:
            tab = await Tab.open(stack, http, admin_token(stack, admin.user_id, account), "/admin/email")
            _, page = await tab.get("/admin/email?status=reconnect_required")
            row = re.search(rf'<tr data-user="{mailbox.user_id}">(.*?)</tr>', page, re.S)
            assert row and "Needs reconnect" in text_of(row.group(1))
            assert "Reconnect: your password was changed" in text_of(row.group(1))

        await stack.connect(mailbox)
        resolved = await tail.wait_for(type="notice.resolved", user_id=mailbox.user_id, timeout=40)
        assert resolved["notice_id"] == opened["notice_id"]
        await wait_until(lambda: db.fetchval("SELECT count(*) = 0 FROM outbox WHERE topic = 'mailsync.notices.v1'"
                                             " AND key = $1 AND published_at IS NULL", mailbox.user_id),
                         what="every notice of the user published")
        await tail.poll()
        mine = [e["type"] for e in tail.matching(user_id=mailbox.user_id)]
        assert mine == ["notice.action_required", "notice.resolved"], mine
    finally:
        await stack.sandbox("POST", "/sandbox/faults", {"reset": True})
        await tail.stop()

"""The self-served settings page in a real headless Chromium, as a new user would use it: import the last 14
days (the estimate, then the progress bar reaching done), ask why a Junk email is missing, press Sync now;
then the page at 375 px wide, with the keyboard alone, and checked by axe-core. Screenshots are kept in
tests/artifacts/screenshots/self-service-*.png."""

from __future__ import annotations

import os
import re
import shutil
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from playwright.async_api import Page, async_playwright, expect

from tests.e2e.test_self_service import JUNK_HEADERS, admin_token, connected
from tests.support.stack import Mailbox, Stack
from tests.support.stack import browser as stack_browser

pytestmark = [pytest.mark.e2e]

ROOT = Path(__file__).resolve().parents[2]
SHOTS = ROOT / "tests" / "artifacts" / "screenshots"
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-sync",
                  "--disable-background-networking", "--disable-component-update"]
# axe-core from npm (`npm pack axe-core`), unpacked where the tests look for it.
AXE_PLACES = [os.environ.get("MAILSYNC_AXE_JS", ""), str(ROOT / ".cache" / "axe-core" / "axe.min.js"),
              str(ROOT / "node_modules" / "axe-core" / "axe.min.js")]


def axe_script() -> str | None:
    return next((p for p in AXE_PLACES if p and Path(p).is_file()), None)


async def consent_blocked(stack: Stack, account: str) -> Mailbox:
    """A user whose organisation requires an administrator's approval: connecting ends consent_required."""
    mailbox = await stack.new_mailbox(account, connect=False, tenant_id=str(uuid.uuid4()))
    await stack.sandbox("POST", f"/sandbox/tenants/{mailbox.tenant_id}/policy", {"admin_consent_required": True})
    session = stack.session_token(mailbox.user_id, account)
    async with stack_browser(stack) as tab, tab.get(
            f"{stack.api_url}/oauth/microsoft365/start",
            params={"session": session, "csrf": stack.csrf(session), "login_hint": mailbox.address}) as resp:
        assert resp.status == 200 and "notice=refused" in str(resp.url), resp.url
    _, view = await stack.api("GET", f"/api/v1/users/{mailbox.user_id}/connection")
    assert view["status"] == "consent_required", view
    return mailbox


def ago(**delta: float) -> str:
    return (datetime.now(UTC) - timedelta(**delta)).strftime("%Y-%m-%dT%H:%M:%SZ")


async def shot(page: Page, name: str) -> None:
    await page.screenshot(path=str(SHOTS / f"self-service-{name}.png"), full_page=True)


def chromium() -> str:
    executable = shutil.which("chromium")
    assert executable, "Debian's chromium is required (make test installs it)"
    SHOTS.mkdir(parents=True, exist_ok=True)
    return executable


async def test_a_new_user_imports_asks_why_and_syncs_in_a_browser(stack: Stack, db):
    account, _contact, mailbox = await connected(stack, db)
    await stack.sandbox("POST", "/sandbox/faults", {"notification_drop_rate": 1.0})  # history: only the import
    try:
        for days in (2, 4, 6, 10):
            await stack.deliver(mailbox, received_at=ago(days=days), **{"from": "known@client.example"})
        await stack.deliver(mailbox, received_at=ago(days=8), **{"from": "stranger@elsewhere.example"})
    finally:
        await stack.sandbox("POST", "/sandbox/faults", {"reset": True})
    junk = await stack.deliver(mailbox, folder="junkemail", **{"from": "known@client.example"})

    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=chromium(), headless=True, args=CHROMIUM_FLAGS)
        try:
            page = await browser.new_page(viewport={"width": 1000, "height": 900})
            await page.goto(f"{stack.api_url}/settings/email?session={stack.session_token(mailbox.user_id, account)}")
            await expect(page.locator("#status")).to_have_text("Connected")
            await shot(page, "1-connected")

            # Import older email: the last 14 days (the form's default range), the estimate first.
            await expect(page.locator("#since")).to_have_value((datetime.now(UTC).date()
                                                                - timedelta(days=14)).isoformat())
            await page.locator("#import-estimate").click()
            await expect(page.locator("#notice")).to_contain_text("Counting the emails")
            # The page's script follows the dry run and reloads when it is done: the estimate and Confirm appear.
            await expect(page.locator("#import-start")).to_be_visible(timeout=40_000)
            await expect(page.locator("#import-words")).to_contain_text(
                re.compile(r"^About \d+ emails, \d+ with your contacts, from "))
            await shot(page, "2-estimate")
            await page.locator("#import-start").click()
            await expect(page.locator("#import-bar")).to_be_visible()
            await shot(page, "3-importing")
            await expect(page.locator("#import-words")).to_contain_text("Done:", timeout=60_000)
            await expect(page.locator("#import-words")).to_contain_text("added to your clients' timelines")
            assert await page.locator("#import-bar").get_attribute("value") == \
                await page.locator("#import-bar").get_attribute("max")
            await shot(page, "4-import-done")

            # Why is an email missing? Paste its Internet headers.
            await stack.wait_row("SELECT 1 FROM match_decisions WHERE message_key = $1", junk, what="junk decision")
            headers = JUNK_HEADERS.format(date=datetime.now(UTC).strftime("%a, %d %b %Y %H:%M:%S +0000"),
                                          to=mailbox.address, imid=junk)
            await page.locator("#headers").fill(headers)
            await page.locator("#diagnose-ask").click()
            await expect(page.locator("#answer-todo")).to_contain_text("It was in Junk Email")
            await shot(page, "5-why-missing")

            # Sync now.
            await page.locator("#sync-now").click()
            await expect(page.locator("#notice")).to_contain_text("Sync requested")
            await expect(page.locator("#last-sync")).to_contain_text("Last successful sync:")
            await shot(page, "6-sync-now")
        finally:
            await browser.close()


async def test_the_pages_work_at_375px_with_the_keyboard_and_pass_axe(stack: Stack, db):
    account, _contact, mailbox = await connected(stack, db)
    blocked = await consent_blocked(stack, account)
    axe = axe_script()
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=chromium(), headless=True, args=CHROMIUM_FLAGS)
        try:
            # bypass_csp only so that axe's own script can be injected; the pages themselves run under their CSP.
            context = await browser.new_context(viewport={"width": 375, "height": 800}, bypass_csp=True)
            await context.grant_permissions(["clipboard-read", "clipboard-write"])
            page = await context.new_page()
            pages = {
                "settings": (mailbox.user_id, stack.session_token(mailbox.user_id, account), "/settings/email"),
                "consent": (blocked.user_id, stack.session_token(blocked.user_id, account), "/settings/email"),
                "admin": (mailbox.user_id, admin_token(stack, mailbox.user_id, account), "/admin/email"),
            }
            results: dict[str, list[str]] = {}
            for name, (_user, token, path) in pages.items():
                await context.clear_cookies()
                await page.goto(f"{stack.api_url}{path}?session={token}")
                await expect(page.locator("h1")).to_be_visible()
                overflow = await page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
                assert overflow <= 0, f"{name} scrolls sideways at 375 px by {overflow} px"
                await shot(page, f"375px-{name}")
                if axe:
                    await page.add_script_tag(path=axe)
                    found = await page.evaluate(
                        "async () => (await axe.run(document, {runOnly: ['wcag2a', 'wcag2aa']})).violations"
                        ".map(v => v.id + ': ' + v.nodes.length)")
                    results[name] = found
            if axe:
                (SHOTS / "self-service-axe.txt").write_text(
                    "".join(f"{name}: {found or 'no violations'}\n" for name, found in results.items()))
                assert results == {name: [] for name in pages}, results

            # The keyboard alone: from the top of the consent page, Tab reaches the copy button and Enter copies.
            await context.clear_cookies()
            await page.goto(f"{stack.api_url}/settings/email?session={pages['consent'][1]}")
            for _ in range(12):
                await page.keyboard.press("Tab")
                if await page.evaluate("document.activeElement.id") == "copy-link":
                    break
            assert await page.evaluate("document.activeElement.id") == "copy-link"
            await page.keyboard.press("Enter")
            await expect(page.locator("#copied")).to_have_text("Copied.")
            copied = await page.evaluate("navigator.clipboard.readText()")
            assert copied == await page.locator("#consent-link").input_value() and "/adminconsent?" in copied
            await shot(page, "consent-copied")

            # The settings page's controls in order: Disconnect, Sync now, the import dates, Explain.
            await context.clear_cookies()
            await page.goto(f"{stack.api_url}/settings/email?session={pages['settings'][1]}")
            order: list[str] = []
            for _ in range(25):
                await page.keyboard.press("Tab")
                focused = await page.evaluate("document.activeElement.id")
                if not order or order[-1] != focused:  # a date field's day, month and year are one stop each
                    order.append(focused)
            wanted = ["disconnect", "sync-now", "since", "until", "import-estimate", "headers", "diagnose-ask"]
            first_visits = list(dict.fromkeys(order))  # Tab wraps around to the top after the last control
            assert [i for i in first_visits if i in wanted] == wanted, order
        finally:
            await browser.close()
    assert axe, "axe-core not found: `make test` unpacks it into .cache/axe-core/ (Makefile, AXE_JS)"

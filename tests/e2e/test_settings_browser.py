"""A real headless Chromium clicks through the Email Authentication page and the sandbox's consent page."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
from playwright.async_api import Page, async_playwright, expect

from tests.support.browser_trust import home_trusting
from tests.support.stack import Stack
from tests.support.wait import wait_until

pytestmark = [pytest.mark.e2e]

SHOTS = Path(__file__).resolve().parents[1] / "artifacts" / "screenshots"
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-sync",
                  "--disable-background-networking", "--disable-component-update"]


async def consent(page: Page, name: str) -> None:
    await page.wait_for_url(re.compile(r"/oauth2/v2\.0/authorize"))
    await page.screenshot(path=str(SHOTS / name), full_page=True)
    await page.get_by_role("button", name=re.compile("accept", re.IGNORECASE)).click()
    await page.wait_for_url(re.compile(r"/settings/email"))


async def test_connect_revoke_reconnect_in_a_browser(stack: Stack, tmp_path: Path):
    executable = shutil.which("chromium")
    assert executable, "Debian's chromium is required (make test installs it)"
    SHOTS.mkdir(parents=True, exist_ok=True)
    account = stack.new_account()
    mailbox = await stack.new_mailbox(account, connect=False, auto_consent=False)
    # A password reset leaves access tokens valid until they expire (no cp1), as at Microsoft: tokens under
    # the services' refresh margin make the next Graph call refresh, and that refresh fails with AADSTS50173.
    await stack.sandbox("POST", "/sandbox/faults", {"access_token_lifetime_s": 120})

    async with async_playwright() as pw:
        home = home_trusting(stack.ca_file, tmp_path)  # the sandbox's sign-in page is HTTPS, as Microsoft's
        browser = await pw.chromium.launch(executable_path=executable, headless=True, args=CHROMIUM_FLAGS,
                                           env={"HOME": str(home)})
        try:
            page = await browser.new_page()
            await page.goto(f"{stack.api_url}/settings/email?session={stack.session_token(mailbox.user_id, account)}")
            await expect(page.locator("#status")).to_have_text("Not connected")
            await page.screenshot(path=str(SHOTS / "1-not-connected.png"), full_page=True)

            await page.locator("#connect").click()
            await consent(page, "2-consent.png")
            await expect(page.locator("#status")).to_have_text("Connected")
            await expect(page.locator("#mailbox")).to_have_text(mailbox.address)
            await expect(page.locator("#whoami")).to_have_text(f"Settings of {mailbox.address}")
            await page.screenshot(path=str(SHOTS / "3-connected.png"), full_page=True)

            await stack.sandbox("POST", f"/sandbox/users/{mailbox.graph_id}/revoke", {"reason": "password_reset"})
            await stack.deliver(mailbox, **{"from": "client@client.example"})  # Outlook removed the subscription:
            # recreating it (or any Graph call) refreshes the token first, and the refresh meets the revocation

            async def flagged() -> bool:
                _, view = await stack.api("GET", f"/api/v1/users/{mailbox.user_id}/connection")
                return view["status"] == "reconnect_required"

            await wait_until(flagged, what="reconnect_required")
            await page.reload()
            await expect(page.locator("#status")).to_have_text("Reconnect required")
            await expect(page.locator("#reason")).to_contain_text("password")
            await page.screenshot(path=str(SHOTS / "4-reconnect-required.png"), full_page=True)

            await page.locator("#connect").click()
            await consent(page, "5-consent-again.png")
            await expect(page.locator("#status")).to_have_text("Connected")
            await page.screenshot(path=str(SHOTS / "6-connected-again.png"), full_page=True)
        finally:
            await browser.close()
            await stack.sandbox("POST", "/sandbox/faults", {"reset": True})

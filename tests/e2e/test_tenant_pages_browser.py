"""The administrator's path on /admin/email for the organisation-wide connection, in a real headless Chromium
at 375 px under the page's CSP: type the tenant id, connect, copy the consent link (keyboard), the IT
administrator consents in their own browser, the panel shows the mailboxes synced; axe-core finds nothing in
each state. Screenshots in tests/artifacts/screenshots/self-service-tenant-*.png."""

from __future__ import annotations

import pytest
from playwright.async_api import async_playwright, expect

from tests.e2e.test_self_service import admin_token
from tests.e2e.test_self_service_browser import CHROMIUM_FLAGS, axe_script, chromium, shot
from tests.support.stack import Stack
from tests.support.tenant import follow, org, tenant_view
from tests.support.wait import wait_until

pytestmark = [pytest.mark.e2e]


async def test_an_administrator_connects_the_organisation_in_a_browser(stack: Stack):
    account = stack.new_account()
    tenant, (first, _second) = await org(stack, account, 2)
    axe = axe_script()
    assert axe, "axe-core not found: `make test` unpacks it into .cache/axe-core/ (Makefile, AXE_JS)"
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=chromium(), headless=True, args=CHROMIUM_FLAGS)
        try:
            # bypass_csp only so that axe's own script can be injected; the page itself runs under its CSP.
            context = await browser.new_context(viewport={"width": 375, "height": 800}, bypass_csp=True)
            await context.grant_permissions(["clipboard-read", "clipboard-write"])
            page = await context.new_page()

            async def no_violations(name: str) -> None:
                overflow = await page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
                assert overflow <= 0, f"{name} scrolls sideways at 375 px by {overflow} px"
                await page.add_script_tag(path=axe)
                found = await page.evaluate(
                    "async () => (await axe.run(document, {runOnly: ['wcag2a', 'wcag2aa']})).violations"
                    ".map(v => v.id + ': ' + v.nodes.length)")
                assert found == [], (name, found)
                await shot(page, f"tenant-{name}")

            token = admin_token(stack, first.user_id, account)
            await page.goto(f"{stack.api_url}/admin/email?session={token}")
            await no_violations("start")
            await page.locator("#tenant-id-input").fill("organizations")
            await page.locator("#tenant-start").click()
            await expect(page.locator("#tenant-error")).to_contain_text("tenant id")
            assert await page.locator("#tenant-id-input").get_attribute("aria-invalid") == "true"
            await no_violations("invalid")

            await page.locator("#tenant-id-input").fill(tenant)
            await page.locator("#tenant-start").click()
            await expect(page.locator("#tenant-status")).to_have_text("Waiting for an administrator")
            link = await page.locator("#tenant-link").input_value()
            assert link.startswith(f"{stack.sandbox_url}/{tenant}/v2.0/adminconsent?") and "state=" in link
            await no_violations("link")
            # The keyboard alone reaches the copy button; Enter copies the link.
            await page.locator("#tenant-link").focus()
            await page.keyboard.press("Tab")
            assert await page.evaluate("document.activeElement.id") == "copy-tenant-link"
            await page.keyboard.press("Enter")
            await expect(page.locator("#copied")).to_have_text("Copied.")
            assert await page.evaluate("navigator.clipboard.readText()") == link

            status, answer = await follow(stack, link)  # the IT administrator's own browser
            assert status == 200 and "Consent recorded" in answer, answer
            await wait_until(lambda: _enrolled(stack, account, 2), timeout=30, what="both mailboxes enrolled")
            await page.goto(f"{stack.api_url}/admin/email")
            await expect(page.locator("#tenant-status")).to_have_text("Connected")
            await expect(page.locator("#tenant-enrolled")).to_have_text("2")
            await no_violations("connected")
        finally:
            await browser.close()


async def _enrolled(stack: Stack, account: str, n: int) -> bool:
    return (await tenant_view(stack, account))["mailboxes"]["enrolled"] >= n

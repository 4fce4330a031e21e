import base64
import hashlib
import re
from datetime import UTC, datetime

from services.subscriber.oauth import mailbox_addresses, missing_scopes, user_cancelled
from services.subscriber.sessions import page_csp
from services.subscriber.settings_page import render, when

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


def test_times_are_in_plain_words():
    assert when(None) == "Not yet"
    assert when("2026-11-26T11:57:00+00:00", NOW) == "26 Nov 2026, 11:57 UTC (3 minutes ago)"
    assert when("2026-11-24T12:00:00+00:00", NOW).endswith("(2 days ago)")


def test_reconnect_required_page_says_why_and_offers_reconnect():
    html = render({"status": "reconnect_required", "reason": "Your password was reset <b>", "error_code": "AADSTS50173",
                   "mailbox_address": "a@b.example"}, csrf="c", notice=None)
    assert "Reconnect required" in html and "Reconnect Microsoft 365" in html
    assert "Your password was reset &lt;b&gt;" in html and "AADSTS50173" in html  # escaped, with the code


def test_missing_scopes_are_named():
    assert missing_scopes(("openid", "https://graph.microsoft.com/Mail.Read", "user.read")) == []
    assert missing_scopes(("openid", "User.Read")) == ["Mail.Read"]


def test_the_page_names_whose_settings_and_explains_a_mismatch():
    html = render({"status": "never_connected"}, csrf="c", notice="mailbox_mismatch", owner="alice@x.example",
                  signed_in_as="victim@other.example")
    assert 'id="whoami">Settings of <strong>alice@x.example</strong>' in html
    assert "You signed in as victim@other.example; this account is alice@x.example&#39;s." in html  # Jinja2's escape
    assert "Connect Microsoft 365" in html
    cancelled = render({"status": "connected"}, csrf="c", notice="cancelled", owner="a@x.example")
    assert "You cancelled at Microsoft 365; nothing changed." in cancelled


def test_the_csp_allows_exactly_the_pages_own_stylesheet():
    html = render({"status": "connected"}, csrf="c", notice=None, owner="a@x.example")
    (style,) = re.findall(r"<style>(.*?)</style>", html, re.S)
    digest = base64.b64encode(hashlib.sha256(style.encode()).digest()).decode()
    csp = page_csp("https://login.microsoftonline.com")
    assert f"style-src 'sha256-{digest}'" in csp
    assert "default-src 'none'" in csp and "frame-ancestors 'none'" in csp
    assert "form-action 'self' https://login.microsoftonline.com;" in csp
    # Scripts: only the page's own file, never inline (the page works without it: progressive enhancement).
    assert "script-src 'self';" in csp and "connect-src 'self';" in csp
    assert "unsafe-inline" not in csp and not re.search(r"\sstyle=", html)
    assert re.findall(r"<script[^>]*>", html) == ['<script src="/settings/static/page.js" defer>']


def test_cancel_is_told_apart_from_refusals():
    assert user_cancelled("access_denied", "AADSTS65004: User declined to consent to access the app.", "cancel")
    assert user_cancelled("access_denied", "AADSTS65004: User declined to consent.", "")
    assert user_cancelled("access_denied", "", "")
    assert user_cancelled("login_required", "AADSTS50058: x", "cancel")
    assert not user_cancelled("consent_required", "AADSTS90094: Administrator approval required", "")
    assert not user_cancelled("access_denied", "AADSTS50105: The signed in user is not assigned to a role", "")


def test_a_mailbox_is_known_by_mail_user_principal_name_and_proxy_addresses():
    primary, addresses = mailbox_addresses({
        "mail": "Jane.Doe@Contoso.com", "userPrincipalName": "jane@contoso.onmicrosoft.com",
        "proxyAddresses": ["SMTP:jane.doe@contoso.com", "smtp:jd@contoso.com", "X500:/o=x", "SIP:jane@contoso.com"]})
    assert primary == "jane.doe@contoso.com"
    assert addresses == {"jane.doe@contoso.com", "jane@contoso.onmicrosoft.com", "jd@contoso.com"}
    assert mailbox_addresses({"mail": None, "userPrincipalName": "u@x.example", "proxyAddresses": None}) == (
        "u@x.example", frozenset({"u@x.example"}))

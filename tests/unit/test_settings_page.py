from datetime import UTC, datetime

from services.subscriber.oauth import missing_scopes
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

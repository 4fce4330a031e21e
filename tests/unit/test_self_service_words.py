"""What the settings and admin pages say: diagnose answers with the one thing to do, import progress, the
administrator's link, CSV cells that stay text, push coverage."""

from __future__ import annotations

from datetime import UTC, datetime
from urllib.parse import parse_qs, urlsplit

from services.core.application.coverage import Coverage
from services.subscriber.admin_page import connection_mode, csv_cell
from services.subscriber.page_words import (
    admin_consent_link,
    as_message_id,
    diagnose_answer,
    import_view,
    looks_like_message_id,
    words_to_send,
)

SINCE, UNTIL = datetime(2026, 11, 1, tzinfo=UTC), datetime(2026, 11, 15, tzinfo=UTC)


def reason(code: str, detail: str = "d") -> dict[str, str]:
    return {"code": code, "detail": detail}


def test_each_diagnosis_has_one_thing_to_do():
    junk = diagnose_answer({"decision": "excluded", "folder": "junkemail", "reasons": [reason("excluded_folder")]})
    assert junk.headline == "mailsync left this email out on purpose." and "Not junk" in junk.todo
    unknown = diagnose_answer({"decision": "not_matched", "reasons": [
        reason("no_known_participant"), reason("unknown_address", "new@client.example is not the address of any"),
        reason("direction_inbound")]})
    assert unknown.todo.startswith("Add new@client.example to the contact in the CRM")
    assert all("received" not in d for d in unknown.details)  # the direction is no explanation
    assert "blocklist" in diagnose_answer({"decision": "not_matched",
                                           "reasons": [reason("blocklisted_domain")]}).todo
    assert diagnose_answer({"decision": "matched", "reasons": [reason("contact_address")]}).todo.startswith("Nothing")
    early = diagnose_answer({"decision": "not_seen", "reasons": [reason("not_seen")]},
                            connected_at=datetime(2026, 11, 20, tzinfo=UTC), sent_at=datetime(2026, 11, 2, tzinfo=UTC))
    assert "Import older email" in early.todo and "2 Nov 2026" in early.todo
    assert "Press Sync now" in diagnose_answer({"decision": "not_seen", "reasons": [reason("not_seen")]}).todo


def test_a_message_id_is_told_apart_from_headers():
    assert looks_like_message_id("<abc@x.example>") and looks_like_message_id("abc@x.example")
    assert not looks_like_message_id("From: a@x.example\nTo: b@y.example")
    assert not looks_like_message_id("Message-ID: <abc@x.example>")
    assert as_message_id(" abc@x.example ") == "<abc@x.example>" and as_message_id("<a@b>") == "<a@b>"


def job(**fields):
    return {"since": SINCE, "until": UNTIL, "dry_run": False, "status": "running", "messages_seen": 0,
            "engagements_created": 0, "estimated_total": None, "error": None, **fields}


def test_import_progress_in_words():
    counting = import_view(job(dry_run=True, messages_seen=40, estimated_total=300))
    assert counting.phase == "counting" and counting.running and "40 so far of about 300" in counting.words
    estimated = import_view(job(dry_run=True, status="done", messages_seen=340, estimated_total=340,
                                estimated_with_contacts=12))
    assert estimated.phase == "estimated"
    assert estimated.words.startswith("About 340 emails, 12 with your contacts, from 1 Nov 2026 to 15 Nov 2026.")
    running = import_view(job(messages_seen=100, estimated_total=340, engagements_created=12))
    assert (running.value, running.maximum) == (100, 340) and "12 added" in running.words
    done = import_view(job(status="done", messages_seen=340, estimated_total=340, engagements_created=12))
    assert done.phase == "done" and not done.running and done.words.startswith("Done: 340 emails")
    failed = import_view(job(status="failed", error="the mailbox is reconnect_required"))
    assert failed.phase == "failed" and "reconnect_required" in failed.words


def test_the_administrators_link_and_words():
    link = admin_consent_link("https://login.microsoftonline.com/", "cid", "https://crm.example", "tenant-1")
    parts = urlsplit(link)
    assert parts.path == "/tenant-1/v2.0/adminconsent"
    assert parse_qs(parts.query) == {"client_id": ["cid"], "scope": ["https://graph.microsoft.com/.default"],
                                     "redirect_uri": ["https://crm.example/oauth/microsoft365/admin-callback"]}
    assert "/organizations/" in admin_consent_link("https://l.example", "c", "https://a.example", None)
    words = words_to_send(link, "a@x.example")
    assert link in words and "a@x.example" in words


def test_csv_cells_never_become_formulas():
    for dangerous in ("=1+1", "+SUM(A1)", "-2", "@cmd", "\tx", "\rx"):
        assert csv_cell(dangerous) == "'" + dangerous
    assert csv_cell("alice@x.example") == "alice@x.example" and csv_cell(None) == ""


def test_mode_is_user_until_a_tenant_connection_covers_the_user():
    assert connection_mode("connected", None) == "user"
    assert connection_mode("never_connected", {"status": "connected"}) == "tenant"
    assert connection_mode("connected", {"status": "connected"}) == "user"
    assert connection_mode("never_connected", {"status": "pending_consent"}) == "user"


def test_push_coverage_threshold():
    assert not Coverage(announced=50, poll_only=2).degraded  # noise
    assert not Coverage(announced=100, poll_only=5).degraded  # 5 % of the mail
    assert Coverage(announced=0, poll_only=3).degraded  # every notification dropped
    assert Coverage(announced=8, poll_only=3).degraded
    assert "hourly poll is covering" in Coverage(0, 3).words


def test_the_estimate_reads_every_participant_of_a_listed_message():
    from services.renewer.jobs import message_addresses

    message = {"id": "m", "from": {"emailAddress": {"address": "Known@Client.Example", "name": "K"}},
               "toRecipients": [{"emailAddress": {"address": "me@ours.example"}}, {"emailAddress": {}}],
               "ccRecipients": None, "replyTo": [{"emailAddress": {"address": "/O=EXCHANGELABS/OU=x"}}]}
    assert message_addresses(message) == {"known@client.example", "me@ours.example"}
    assert message_addresses({"id": "bare"}) == set()

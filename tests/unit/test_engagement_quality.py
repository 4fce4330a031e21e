"""Pure logic of issue 15: automated-mail headers, capture tiers, never_log, and how decide() applies them."""

from __future__ import annotations

from dataclasses import replace

import pytest

from services.core.domain import automated, capture
from services.core.domain.capture import Capture
from services.core.domain.matching import decide
from services.core.domain.model import ContactRef, Decision, DirectorySnapshot, EmailAddress, MailboxOwner, MailMessage
from services.core.domain.never_log import canonical_entry, excluded_by
from services.core.domain.reasons import ReasonCode
from services.matcher.graph_message import message_select, parse_message

# --- automated mail ---------------------------------------------------------------------------


@pytest.mark.parametrize(("headers", "header"), [
    ([("List-Unsubscribe", "<mailto:leave@news.example>")], "List-Unsubscribe"),
    ([("list-unsubscribe", "<https://news.example/u?x=1>")], "List-Unsubscribe"),
    ([("LIST-ID", "Weekly news <news.list.example>")], "List-Id"),
    ([("Precedence", "bulk")], "Precedence"),
    ([("precedence", "  BULK ")], "Precedence"),
    ([("Precedence", "list")], "Precedence"),
    ([("Precedence", "Junk (spam filter)")], "Precedence"),
    ([("Precedence", "bulk;x=1")], "Precedence"),
    ([("Auto-Submitted", "auto-generated")], "Auto-Submitted"),
    ([("auto-submitted", "Auto-Replied; owner-email=\"a@b.example\"")], "Auto-Submitted"),
    ([("Auto-Submitted", "auto-notified (cron)")], "Auto-Submitted"),
    ([("Auto-Submitted", "yes")], "Auto-Submitted"),  # anything other than "no" is a machine's
    ([("Auto-Submitted", "\r\n auto-generated")], "Auto-Submitted"),  # folded
    ([("Auto-Submitted", "no"), ("List-Id", "<x.example>")], "List-Id"),
])
def test_automated_headers(headers: list[tuple[str, str]], header: str) -> None:
    found = automated.classify(headers)
    assert found is not None and found.header == header
    assert header in found.describe()


@pytest.mark.parametrize("headers", [
    [],
    [("Auto-Submitted", "no")],
    [("Auto-Submitted", "No")],
    [("Auto-Submitted", " no (sent by a person)")],
    [("Auto-Submitted", "")],
    [("Auto-Submitted", "   ")],
    [("List-Unsubscribe", "")],
    [("List-Id", " ")],
    [("Precedence", "first-class")],
    [("Precedence", "bulky")],
    [("Precedence", "")],
    [("X-List-Unsubscribe", "<mailto:x@y>")],  # a different header
    [("Subject", "Precedence: bulk")],
    [("From", "list-id@example.com")],
])
def test_personal_mail_is_not_automated(headers: list[tuple[str, str]]) -> None:
    assert automated.classify(headers) is None


def test_long_values_are_cut_in_the_reason() -> None:
    found = automated.classify([("List-Id", "x" * 5000)])
    assert found is not None and len(found.describe()) < 250


def test_graph_headers_are_read_leniently() -> None:
    assert automated.from_graph(None) == []
    assert automated.from_graph("List-Id: x") == []
    assert automated.from_graph([{"name": "List-Id", "value": "x"}, {"name": 3, "value": "y"}, "junk",
                                 {"name": "Precedence"}]) == [("List-Id", "x")]


# --- capture tiers ----------------------------------------------------------------------------


def test_tiers_keep_exactly_their_fields() -> None:
    assert capture.keep(Capture.METADATA, "Renewal", "Hi Ana") == capture.Kept(None, None)
    assert capture.keep(Capture.SUBJECT, "Renewal", "Hi Ana") == capture.Kept("Renewal", None)
    assert capture.keep(Capture.PREVIEW, "Renewal", "Hi Ana") == capture.Kept("Renewal", "Hi Ana")
    assert capture.keep(Capture.PREVIEW, "s", "p" * 400).preview == "p" * 255


def test_published_fields_per_tier() -> None:
    assert capture.published_fields(Capture.METADATA, "Renewal", "Hi") == {}
    assert capture.published_fields(Capture.SUBJECT, "Renewal", None) == {"subject": "Renewal"}
    assert capture.published_fields(Capture.SUBJECT, None, None) == {"subject": ""}
    assert capture.published_fields(Capture.PREVIEW, "Renewal", "Hi") == {"subject": "Renewal", "preview": "Hi"}


def test_tier_order_and_parsing() -> None:
    assert Capture.METADATA.level < Capture.SUBJECT.level < Capture.PREVIEW.level
    assert capture.parse(None) is Capture.SUBJECT and capture.parse("preview") is Capture.PREVIEW
    for bad in ("PREVIEW", "full", 3, "", ["subject"]):
        with pytest.raises(ValueError):
            capture.parse(bad)


def test_select_asks_for_headers_and_preview_only_when_needed() -> None:
    plain = message_select(headers=False, preview=False)
    assert "internetMessageHeaders" not in plain and "bodyPreview" not in plain and "body" not in plain.split(",")
    assert message_select(headers=True, preview=False).endswith(",internetMessageHeaders")
    assert message_select(headers=False, preview=True).endswith(",bodyPreview")


def test_parse_message_reads_preview_and_headers() -> None:
    body = {"id": "m1", "subject": "News", "bodyPreview": "p" * 300,
            "internetMessageHeaders": [{"name": "list-unsubscribe", "value": "<mailto:u@x.example>"}]}
    message = parse_message(body, folder="inbox")
    assert message.preview == "p" * 255
    assert message.automated_by == "List-Unsubscribe: <mailto:u@x.example>"
    bare = parse_message({"id": "m2"}, folder="inbox")
    assert bare.preview == "" and bare.automated_by is None


# --- never_log --------------------------------------------------------------------------------


@pytest.mark.parametrize(("raw", "canonical"), [
    ("Mom@Family.Example", "mom@family.example"),
    ("  @Family.Example ", "@family.example"),
    ("@bücher.example", "@xn--bcher-kva.example"),
    ("@family.example.", "@family.example"),
    ("not an address", None),
    ("@", None),
    ("@@family.example", None),
    ("@localhost", None),
    ("", None),
])
def test_never_log_entries(raw: str, canonical: str | None) -> None:
    assert canonical_entry(raw) == canonical


def test_never_log_matching() -> None:
    entries = ["mom@family.example", "@Friends.Example"]
    assert excluded_by("MOM@family.example", entries) == "mom@family.example"
    assert excluded_by("anyone@friends.example", entries) == "@friends.example"
    assert excluded_by("Anyone@FRIENDS.example", entries) == "@friends.example"
    assert excluded_by("mom+news@family.example", entries) is None  # a plus-address is its own address
    assert excluded_by("x@sub.friends.example", entries) is None  # exact domain, as client domains
    assert excluded_by("dad@family.example", entries) is None
    assert excluded_by("not an address", entries) is None
    assert excluded_by("mom@family.example", []) is None


# --- decide() with the account's and the owner's settings -------------------------------------

ACCOUNT = "acc-1"
ME = "me@us.example"
CLIENT = "ana@client.example"  # contact c-ana of client k-client
MOM = "mom@family.example"  # also a contact (c-mom), but the owner never logs her mail
OWNER = MailboxOwner("u-1", ACCOUNT, frozenset({ME}))


def snapshot(**overrides: object) -> DirectorySnapshot:
    base = DirectorySnapshot(
        account_id=ACCOUNT,
        contacts_by_address={CLIENT: frozenset({ContactRef("c-ana", "k-client")}),
                             MOM: frozenset({ContactRef("c-mom", None)})},
        colleague_addresses=frozenset({ME}), clients_by_domain={"client.example": frozenset({"k-client"})})
    return replace(base, **overrides)  # type: ignore[arg-type]


def mail(from_: str, *cc: str, automated_by: str | None = None) -> MailMessage:
    return MailMessage(message_id="m", internet_message_id="<m@x>", conversation_id="c", subject="s",
                       folder="inbox", is_draft=False, received_at=None, sent_at=None,
                       from_=EmailAddress(from_), sender=None, to=(EmailAddress(ME),),
                       cc=tuple(EmailAddress(a) for a in cc), automated_by=automated_by)


def test_automated_mail_from_a_contact_is_excluded_when_the_account_says_so() -> None:
    newsletter = mail(CLIENT, automated_by="List-Unsubscribe: <mailto:u@client.example>")
    result = decide(newsletter, OWNER, snapshot(exclude_automated=True))
    assert result.decision is Decision.EXCLUDED and result.reasons[0].code == ReasonCode.AUTOMATED
    assert "List-Unsubscribe" in result.reasons[0].detail and not result.contact_ids
    kept = decide(newsletter, OWNER, snapshot(exclude_automated=False))
    assert kept.decision is Decision.MATCHED and kept.contact_ids == ("c-ana",)
    personal = decide(mail(CLIENT), OWNER, snapshot(exclude_automated=True))
    assert personal.decision is Decision.MATCHED


def test_never_log_only_mail_is_excluded_from_this_mailbox() -> None:
    owner = replace(OWNER, never_log=frozenset({"@family.example"}))
    result = decide(mail(MOM), owner, snapshot())
    assert result.decision is Decision.EXCLUDED and result.reasons[0].code == ReasonCode.USER_EXCLUDED
    assert MOM in result.reasons[0].detail and "family.example" in result.reasons[0].detail
    assert not result.contact_ids
    # A colleague without the entry decides the same email on its own list.
    assert decide(mail(MOM), OWNER, snapshot()).contact_ids == ("c-mom",)


def test_never_log_is_case_insensitive_and_takes_raw_entries() -> None:
    owner = replace(OWNER, never_log=frozenset({"MOM@Family.EXAMPLE"}))
    assert decide(mail("Mom@family.example"), owner, snapshot()).decision is Decision.EXCLUDED


def test_mail_shared_with_a_client_too_stays_an_engagement() -> None:
    owner = replace(OWNER, never_log=frozenset({MOM}))
    result = decide(mail(MOM, CLIENT), owner, snapshot())
    assert result.decision is Decision.MATCHED and result.contact_ids == ("c-ana",)
    assert result.reasons[0].code == ReasonCode.CONTACT_ADDRESS
    assert ReasonCode.USER_EXCLUDED in [r.code for r in result.reasons]


def test_never_log_of_an_unknown_address_leaves_the_usual_headline() -> None:
    owner = replace(OWNER, never_log=frozenset({"@strangers.example"}))
    result = decide(mail("who@strangers.example"), owner, snapshot())
    assert result.decision is Decision.NOT_MATCHED and result.reasons[0].code == ReasonCode.NO_KNOWN_PARTICIPANT
    assert ReasonCode.USER_EXCLUDED in [r.code for r in result.reasons]


def test_never_log_domain_covers_client_domain_matching() -> None:
    owner = replace(OWNER, never_log=frozenset({"@client.example"}))
    result = decide(mail("bob@client.example"), owner, snapshot(domain_matching=True))
    assert result.decision is Decision.EXCLUDED and result.reasons[0].code == ReasonCode.USER_EXCLUDED


# --- the feed's schema ------------------------------------------------------------------------


@pytest.mark.parametrize("tier", list(Capture))
def test_engagement_created_of_every_tier_matches_the_asyncapi_document(tier: Capture) -> None:
    import jsonschema

    from services.core.domain import events
    from tests.support.asyncapi import validate

    event = events.envelope("engagement.created", {
        "engagement_id": "6f1c6d1e-0000-4000-8000-000000000001", "account_id": "a", "contact_ids": ["c"],
        "client_ids": [], "direction": "inbound", **capture.published_fields(tier, "Renewal", "Hi Ana"),
        "occurred_at": "2026-11-29T10:00:00+00:00", "internet_message_id": "<m@x>", "conversation_id": "conv",
        "participants": [{"address": "ana@client.example", "name": "", "role": "from"}],
        "mailbox_user_ids": ["u-1"], "mailbox_addresses": ["me@us.example"], "source": "webhook"})
    validate(event)
    with pytest.raises(jsonschema.ValidationError):
        validate({**event, "preview": "p" * 256})  # bodyPreview is at most 255 characters
    without_addresses = {k: v for k, v in event.items() if k != "mailbox_addresses"}
    with pytest.raises(jsonschema.ValidationError):
        validate(without_addresses)

import pytest

from services.matcher.graph_message import UnusableMessage, parse_message


def addr(a, n=""):
    return {"emailAddress": {"address": a, "name": n}}


def test_parses_fields_and_skips_malformed_recipients():
    m = parse_message({
        "id": "m1", "internetMessageId": "<x@y>", "conversationId": "c", "subject": "Hi", "isDraft": False,
        "receivedDateTime": "2026-11-20T10:00:00Z", "sentDateTime": "2026-11-20T09:59:00Z",
        "from": addr("Jane@Acme.example", "Jane"), "sender": addr("jane@acme.example"),
        "toRecipients": [addr("a@b.example"), {"emailAddress": {}}, "junk"], "ccRecipients": None,
    }, folder="inbox")
    assert m.internet_message_id == "<x@y>"
    assert m.from_ is not None and m.from_.address == "Jane@Acme.example"
    assert [a.address for a in m.to] == ["a@b.example"]
    assert m.cc == ()
    assert m.received_at is not None and m.received_at.tzinfo is not None


def test_no_id_is_unusable():
    with pytest.raises(UnusableMessage):
        parse_message({}, folder="inbox")

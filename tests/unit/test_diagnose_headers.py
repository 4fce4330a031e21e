import pytest

from services.core.application.diagnose import DiagnoseError, parse_headers

RAW = """Received: from mail.acme.example (10.0.0.1) by mx.example with SMTP; Thu, 26 Nov 2026 10:00:00 +0000
Message-ID: <CAF=abc123@mail.acme.example>
Date: Thu, 26 Nov 2026 10:00:00 +0100
From: "Doe, Jane" <Jane.Doe@Acme.example>
To: Alice <alice@northwind.example>, bob@northwind.example
Cc: =?utf-8?q?Ren=C3=A9?= <rene@acme.example>
Subject: Renewal
"""


def test_parses_the_fields_diagnose_needs():
    facts = parse_headers(RAW)
    assert facts.internet_message_id == "<CAF=abc123@mail.acme.example>"
    assert facts.from_ is not None and facts.from_.address == "Jane.Doe@Acme.example"
    assert [a.address for a in facts.to] == ["alice@northwind.example", "bob@northwind.example"]
    assert [a.address for a in facts.cc] == ["rene@acme.example"]
    assert facts.sent_at is not None and facts.sent_at.utcoffset() is not None


def test_headers_without_message_id_are_refused_clearly():
    with pytest.raises(DiagnoseError, match="Message-ID"):
        parse_headers("From: a@b.example\nSubject: x\n")


def test_huge_input_is_refused():
    with pytest.raises(DiagnoseError):
        parse_headers("X: " + "a" * 300_000)

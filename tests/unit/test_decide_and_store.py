"""Decide and store, without PostgreSQL: which decision rows are written (re-matching rewrites only what
changed, under its first source) and which engagements are announced by engagement.linked."""

from __future__ import annotations

from datetime import UTC, datetime

from services.core.application.engagements import Copy, Stored
from services.core.application.mail_policy import MailPolicy
from services.core.application.matching import Previous, ToDecide, decisions_to_rewrite, gained_contacts
from services.core.domain.capture import Capture
from services.core.domain.model import (
    Decision,
    Direction,
    EmailAddress,
    MailboxOwner,
    MailMessage,
    MatchResult,
    Reason,
)

OWNER = MailboxOwner("u-1", "acct", frozenset({"me@own.example"}))


def _message(imid: str) -> MailMessage:
    return MailMessage("g-" + imid, imid, "conv", "Hello", "inbox", False, datetime(2026, 11, 2, tzinfo=UTC), None,
                       EmailAddress("ana@client.example"), None, (EmailAddress("me@own.example"),))


def _item(imid: str, previous: Previous | None = None) -> ToDecide:
    return ToDecide(OWNER, MailPolicy(), "c-1", _message(imid), "rematch", previous=previous)


def _copy(item: ToDecide, decision: Decision) -> Copy:
    result = MatchResult(decision, (Reason("x", "y"),), Direction.INBOUND, ())
    return Copy.of(account_id="acct", user_id="u-1", connection_id="c-1", message=item.message, result=result,
                   source=item.source, capture=Capture.SUBJECT)


def test_a_first_decision_is_always_written_and_a_match_is_left_to_its_engagement() -> None:
    items = [_item("<a>"), _item("<b>"), _item("<c>")]
    copies = [_copy(items[0], Decision.NOT_MATCHED), _copy(items[1], Decision.MATCHED),
              _copy(items[2], Decision.EXCLUDED)]
    assert [c.message.internet_message_id for c in decisions_to_rewrite(items, copies)] == ["<a>", "<c>"]


def test_a_decision_decided_again_is_rewritten_only_when_it_changed_and_keeps_its_source() -> None:
    same = _item("<same>", Previous("not_matched", "webhook"))
    changed = _item("<changed>", Previous("matched", "delta"))
    rewritten = decisions_to_rewrite([same, changed], [_copy(same, Decision.NOT_MATCHED),
                                                       _copy(changed, Decision.NOT_MATCHED)])
    assert [(c.message.internet_message_id, c.source) for c in rewritten] == [("<changed>", "delta")]


def test_only_existing_engagements_that_gained_contacts_are_announced_as_linked() -> None:
    stored = [Stored("e-new", "acct", True, {"event_id": "x"}, ["c1"]),
              Stored("e-more", "acct", False, None, ["c2"]),
              Stored("e-same", "acct", False, None, []),
              Stored("e-more", "acct", False, None, ["c3"])]
    assert gained_contacts(stored) == ["e-more"]


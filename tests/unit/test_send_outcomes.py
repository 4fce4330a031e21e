"""A send's outcome as the outbox holds it: send.completed / send.failed on mailsync.sends.v1, keyed by the
user, with an event id stable per send (a republication dedupes), the record being the event the worker
published before the outbox."""

from __future__ import annotations

import json
import uuid

from services.core.application import outbox
from services.core.domain import events
from services.core.domain.event_types import to_value
from services.renewer.sends import outcome_event

SEND = str(uuid.UUID(int=42))


def _row(status: str, error: str | None = None) -> dict[str, object]:
    return {"send_id": uuid.UUID(SEND), "status": status, "user_id": "user-1", "account_id": "acct-1",
            "internet_message_id": "<2a.mailsync@client.example>", "error": error}


def test_a_sent_send_is_one_send_completed_record_keyed_by_its_user() -> None:
    event = outcome_event(_row("sent"))
    entry = outbox.entry(events.SENDS, "user-1", event)
    assert (entry.topic, entry.key) == (events.SENDS, "user-1")
    assert entry.event_id == events.stable_event_id("send.completed", SEND)
    value = json.loads(entry.value)
    assert value == to_value(event)  # the record the worker published itself before the outbox
    assert {k: value[k] for k in ("type", "send_id", "user_id", "account_id", "internet_message_id", "event_id")} == {
        "type": "send.completed", "send_id": SEND, "user_id": "user-1", "account_id": "acct-1",
        "internet_message_id": "<2a.mailsync@client.example>", "event_id": entry.event_id}


def test_a_failed_send_carries_its_reason_and_a_stable_id_of_its_own() -> None:
    refused = outcome_event(_row("failed", "Microsoft 365 refused the message (ErrorInvalidRecipients)"))
    entry = outbox.entry(events.SENDS, "user-1", refused)
    value = json.loads(entry.value)
    assert value["type"] == "send.failed" and value["error"].endswith("(ErrorInvalidRecipients)")
    assert entry.event_id == events.stable_event_id("send.failed", SEND) != events.stable_event_id(
        "send.completed", SEND)
    assert outcome_event(_row("failed")).error == "not sent"  # type: ignore[union-attr]

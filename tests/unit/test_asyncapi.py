"""The AsyncAPI document describes exactly the event types the code produces."""

from __future__ import annotations

import pytest
from jsonschema import ValidationError

from services.core.application.connections import status_event
from services.core.domain import events
from tests.support.asyncapi import DOC, validate


def test_every_topic_is_documented():
    addresses = {channel["address"] for channel in DOC["channels"].values()}
    assert {t.name for t in events.TOPICS} <= addresses
    assert "{topic}.dlq" in addresses


def test_connection_status_event_matches():
    validate(status_event({"connection_id": "6f1c6d1e-0000-4000-8000-000000000001", "user_id": "u",
                           "account_id": "a", "status": "reconnect_required", "reason": "why",
                           "error_code": "AADSTS50173"}))


def test_a_wrong_event_is_caught():
    bad = events.envelope("connection.status", {"connection_id": "x", "status": "sleeping"})
    with pytest.raises(ValidationError):
        validate(bad)

"""A connection's incident as its status changes, and the notice events written with each change, decided
against an in-memory fake of the notices repository (services/core/adapters/store/notices.py is the real one)."""

from __future__ import annotations

import asyncio
import json
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from services.core.adapters.store.outbox import OutboxEntry
from services.core.application.notice_store import incident_change
from services.core.domain import events, notices
from services.core.domain.notices import Incident
from tests.support.asyncapi import validate

CONNECTION = "6f1c6d1e-0000-4000-8000-000000000001"
APP_URL = "https://crm.example"
T0 = datetime(2026, 11, 29, 9, 0, tzinfo=UTC)


@dataclass
class FakeNotices:
    """Notices over a dict of notice_id -> row."""
    rows: dict[str, dict[str, Any]] = field(default_factory=dict)

    async def open_incident(self, connection_id: Any) -> Incident | None:
        for row in self.rows.values():
            if row["connection_id"] == connection_id and row["resolved_at"] is None:
                return Incident(row["notice_id"], row["opened_at"], row["last_notified_at"])
        return None

    async def open(self, connection_id: Any, user_id: str, account_id: str, status: str, reason: str | None,
                   error_code: str | None) -> dict[str, Any]:
        notice_id = str(uuid.uuid4())
        self.rows[notice_id] = {"notice_id": notice_id, "connection_id": connection_id, "user_id": user_id,
                                "account_id": account_id, "status": status, "reason": reason,
                                "error_code": error_code, "opened_at": T0, "last_notified_at": T0,
                                "reminders": 0, "resolved_at": None}
        return dict(self.rows[notice_id])

    async def update(self, notice_id: str, status: str, reason: str | None, error_code: str | None) -> None:
        self.rows[notice_id].update(status=status, reason=reason, error_code=error_code)

    async def resolve(self, notice_id: str) -> dict[str, Any]:
        self.rows[notice_id]["resolved_at"] = T0
        return dict(self.rows[notice_id])


def change(store: FakeNotices, status: str, error_code: str | None = None) -> list[OutboxEntry]:
    row = {"connection_id": CONNECTION, "user_id": "u1", "account_id": "a1", "status": status,
           "reason": f"because {status}", "error_code": error_code}
    return asyncio.run(incident_change(store, row, APP_URL))


def value(entry: OutboxEntry) -> dict[str, Any]:
    decoded: dict[str, Any] = json.loads(entry.value)
    validate(decoded)
    return decoded


def test_an_incident_is_told_once_when_it_opens_and_once_when_it_heals() -> None:
    store = FakeNotices()
    assert change(store, "connected") == []  # nobody needed: no incident
    [opened] = change(store, "reconnect_required", "AADSTS50173")
    event = value(opened)
    notice_id = event["notice_id"]
    assert (opened.topic, opened.key) == (events.NOTICES, "u1")
    assert event["type"] == notices.ACTION_REQUIRED and event["status"] == "reconnect_required"
    assert event["action_url"] == f"{APP_URL}/settings/email" and event["since"] == T0.isoformat()
    assert opened.event_id == event["event_id"] == notices.event_id(notices.ACTION_REQUIRED, notice_id)

    # Further failures belong to the same incident: what is true now is kept, nobody is told again.
    assert change(store, "consent_required", "AADSTS90094") == []
    assert store.rows[notice_id]["status"] == "consent_required"
    assert store.rows[notice_id]["error_code"] == "AADSTS90094"

    [healed] = change(store, "connected")
    event = value(healed)
    assert event["type"] == notices.RESOLVED and event["notice_id"] == notice_id and healed.key == "u1"
    assert healed.event_id == notices.event_id(notices.RESOLVED, notice_id)
    assert change(store, "connected") == []


def test_a_disconnect_ends_the_incident_and_a_later_failure_opens_a_new_one() -> None:
    store = FakeNotices()
    [first] = change(store, "consent_required", "AADSTS65001")
    [ended] = change(store, "disconnected")
    assert value(ended)["type"] == notices.RESOLVED
    [again] = change(store, "reconnect_required", "AADSTS50173")
    assert value(again)["notice_id"] != value(first)["notice_id"] and again.event_id != first.event_id

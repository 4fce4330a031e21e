"""Notices: one per incident, reminders at most once a day (an injected clock), resolved when it heals."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from services.core.domain import notices
from services.core.domain.notices import Incident, Step, on_status_change, reminder_due, what_to_do
from tests.support.asyncapi import validate

T0 = datetime(2026, 11, 29, 9, 0, tzinfo=UTC)
NOTICE = "6f1c6d1e-0000-4000-8000-00000000000a"


def incident(last: datetime = T0) -> Incident:
    return Incident(NOTICE, opened_at=T0, last_notified_at=last)


def test_an_incident_opens_once_and_further_failures_belong_to_it():
    assert on_status_change(None, "reconnect_required") is Step.OPEN
    assert on_status_change(None, "consent_required") is Step.OPEN
    # A second failed refresh, another AADSTS code, consent after reconnect: the same incident, no new notice.
    assert on_status_change(incident(), "reconnect_required") is Step.UPDATE
    assert on_status_change(incident(), "consent_required") is Step.UPDATE


def test_healing_or_stopping_resolves_and_healthy_changes_do_nothing():
    assert on_status_change(incident(), "connected") is Step.RESOLVE
    assert on_status_change(incident(), "disconnected") is Step.RESOLVE
    for status in ("connected", "disconnected", "never_connected"):
        assert on_status_change(None, status) is Step.NONE


def test_reminders_at_most_once_a_day_with_an_injected_clock():
    clock = T0
    told = incident()
    reminders = 0
    for _ in range(4 * 24 * 4):  # four days in steps of 15 minutes
        clock += timedelta(minutes=15)
        if reminder_due(told, clock):
            reminders += 1
            told = Incident(told.notice_id, told.opened_at, clock)
    assert reminders == 4
    assert not reminder_due(incident(), T0 + timedelta(hours=23, minutes=59))
    assert reminder_due(incident(), T0 + timedelta(days=1))


def test_event_ids_are_stable_per_notice_and_reminder():
    assert notices.event_id(notices.ACTION_REQUIRED, NOTICE) == notices.event_id(notices.ACTION_REQUIRED, NOTICE)
    ids = {notices.event_id(notices.REMINDER, NOTICE, n) for n in (1, 2, 3)}
    assert len(ids) == 3 and notices.event_id(notices.RESOLVED, NOTICE) not in ids


def test_events_match_the_asyncapi_document():
    row = {"notice_id": NOTICE, "user_id": "u1", "account_id": "a1",
           "connection_id": "6f1c6d1e-0000-4000-8000-000000000001", "status": "reconnect_required",
           "reason": "Your Microsoft 365 password was reset.", "error_code": "AADSTS50173", "opened_at": T0}
    for kind in (notices.ACTION_REQUIRED, notices.REMINDER):
        event = notices.action_event(kind, notices.event_id(kind, NOTICE, 1), row, "https://crm.example/")
        validate(event)
        assert event["action_url"] == "https://crm.example/settings/email" and event["since"] == T0.isoformat()
    validate(notices.resolved_event(notices.event_id(notices.RESOLVED, NOTICE), row))


def test_what_to_do_in_plain_words():
    assert what_to_do("reconnect_required", "AADSTS50173").startswith("Reconnect: your password was changed")
    assert "administrator" in what_to_do("consent_required", "AADSTS90094")
    assert what_to_do("reconnect_required", "something_new") == "Reconnect the mailbox from the Email settings page."
    assert what_to_do("connected", None) == "Nothing."

"""Notices that reach people (`mailsync.notices.v1`): the decisions, no I/O.

An incident is a stretch of time during which a connection needs its user or an administrator
(`reconnect_required`, `consent_required`). It opens with the status change that starts it and closes with
the one that ends it; every status change in between (a second failed refresh, another AADSTS code) belongs
to the same incident, so a person hears about it once, then at most once a day while it lasts, then once
when it is over.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from services.core.domain import events
from services.core.domain.event_types import NoticeActionRequired, NoticeReminder, NoticeResolved, to_value

NEEDS_SOMEONE = frozenset({"reconnect_required", "consent_required"})
REMINDER_EVERY = timedelta(days=1)

ACTION_REQUIRED = "notice.action_required"
REMINDER = "notice.reminder"
RESOLVED = "notice.resolved"
TYPES = (ACTION_REQUIRED, REMINDER, RESOLVED)


class Step(StrEnum):
    OPEN = "open"  # a new incident: publish notice.action_required
    UPDATE = "update"  # still the same incident (its status or reason changed): nothing to publish
    RESOLVE = "resolve"  # healed (or deliberately stopped): publish notice.resolved
    NONE = "none"


@dataclass(frozen=True)
class Incident:
    notice_id: str
    opened_at: datetime
    last_notified_at: datetime  # the action_required, then the latest reminder


def on_status_change(open_incident: Incident | None, new_status: str) -> Step:
    """What a connection's status change does to its incident."""
    needs = new_status in NEEDS_SOMEONE
    if open_incident is None:
        return Step.OPEN if needs else Step.NONE
    # A disconnect ends the incident too: nobody is asked to act on a mailbox its user chose to stop.
    return Step.UPDATE if needs else Step.RESOLVE


def reminder_due(incident: Incident, now: datetime, every: timedelta = REMINDER_EVERY) -> bool:
    """At most one reminder a day, counted from the last thing the person was told."""
    return now - incident.last_notified_at >= every


def event_id(kind: str, notice_id: str, reminder: int = 0) -> str:
    """The same notice always has the same event id, so a relay that publishes it twice after a crash
    publishes one event (consumers dedupe by event_id)."""
    return events.stable_event_id(kind, notice_id, str(reminder))


def settings_url(app_url: str) -> str:
    return f"{app_url.rstrip('/')}/settings/email"


def action(kind: str, event_id_: str, row: Mapping[str, Any], app_url: str) -> NoticeActionRequired | NoticeReminder:
    """notice.action_required or notice.reminder from a `notices` row."""
    models: dict[str, type[NoticeActionRequired] | type[NoticeReminder]] = {
        ACTION_REQUIRED: NoticeActionRequired, REMINDER: NoticeReminder}
    return models[kind](
        notice_id=str(row["notice_id"]), user_id=row["user_id"], account_id=row["account_id"],
        connection_id=str(row["connection_id"]), status=row["status"], reason=row["reason"],
        error_code=row["error_code"], action_url=settings_url(app_url), since=row["opened_at"].isoformat(),
        event_id=event_id_)


def resolved(event_id_: str, row: Mapping[str, Any]) -> NoticeResolved:
    return NoticeResolved(notice_id=str(row["notice_id"]), user_id=row["user_id"], account_id=row["account_id"],
                          connection_id=str(row["connection_id"]), event_id=event_id_)


def action_event(kind: str, event_id_: str, row: Mapping[str, Any], app_url: str) -> dict[str, Any]:
    return to_value(action(kind, event_id_, row, app_url))


def resolved_event(event_id_: str, row: Mapping[str, Any]) -> dict[str, Any]:
    return to_value(resolved(event_id_, row))


# What a person must do, by status and error code, in plain words (the settings page, /admin/email, e-mails).
_CONSENT = "An administrator of your Microsoft 365 organisation must approve mailsync; then reconnect."
_TO_DO_BY_CODE = {
    "AADSTS50173": "Reconnect: your password was changed, so Microsoft 365 asks you to sign in again.",
    "AADSTS50076": "Reconnect: Microsoft 365 asks for multi-factor sign-in again.",
    "AADSTS50079": "Reconnect: Microsoft 365 asks you to set up multi-factor sign-in.",
    "AADSTS50133": "Reconnect: your password was changed, so Microsoft 365 asks you to sign in again.",
    "AADSTS700082": "Reconnect: the sign-in expired after a long time without use.",
    "AADSTS65004": "Reconnect and accept the permissions mailsync asks for (they were declined).",
    "AADSTS53003": "Ask an administrator: a Conditional Access policy blocks mailsync; then reconnect.",
    "conditional_access": "Reconnect: a Conditional Access policy asked for a fresh sign-in.",
    "token_unreadable": "Reconnect: mailsync can no longer read its stored sign-in.",
    "missing_scopes": "Reconnect and accept every permission, or ask an administrator to approve mailsync.",
    "AADSTS65001": _CONSENT,
    "AADSTS90094": _CONSENT,
    "AADSTS90095": _CONSENT,
}
_TO_DO_BY_STATUS = {
    "never_connected": "Connect the mailbox from the Email settings page.",
    "connected": "Nothing.",
    "reconnect_required": "Reconnect the mailbox from the Email settings page.",
    "consent_required": _CONSENT,
    "disconnected": "Nothing, unless they want mail synced again: then connect from the Email settings page.",
}


def what_to_do(status: str, error_code: str | None) -> str:
    if status in NEEDS_SOMEONE and error_code in _TO_DO_BY_CODE:
        return _TO_DO_BY_CODE[error_code or ""]
    return _TO_DO_BY_STATUS.get(status, "Open the Email settings page.")

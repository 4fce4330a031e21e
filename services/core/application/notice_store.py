"""Notices in PostgreSQL: the incident rows and their events, written inside the status change's transaction
(services/core/application/connections.py StatusReporter.record). Each event goes to the outbox built as it will be
published, with an event id stable per notice (and reminder number), so a republish after a crash is one
event; the writer publishes it after the commit (outbox.publish_now), else the outbox relay does."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

import asyncpg

from services.core.adapters.store.notices import Notices
from services.core.adapters.store.outbox import Outbox
from services.core.application import outbox
from services.core.domain import events, notices
from services.core.domain.event_types import Event
from services.core.domain.notices import Incident, Step


class IncidentStore(Protocol):
    """What incident_change needs of services/core/adapters/store/notices.py Notices (a fake in the unit tests)."""

    async def open_incident(self, connection_id: Any) -> Incident | None: ...

    async def open(self, connection_id: Any, user_id: str, account_id: str, status: str, reason: str | None,
                   error_code: str | None) -> Mapping[str, Any]: ...

    async def update(self, notice_id: str, status: str, reason: str | None, error_code: str | None) -> None: ...

    async def resolve(self, notice_id: str) -> Mapping[str, Any]: ...


def event_entry(kind: str, event_id: str, row: Mapping[str, Any], app_url: str) -> outbox.OutboxEntry:
    """A notice event of a `notices` row, keyed by user_id (one person's notices leave in the order written)."""
    event: Event = notices.resolved(event_id, row) if kind == notices.RESOLVED else \
        notices.action(kind, event_id, row, app_url)
    return outbox.entry(events.NOTICES, row["user_id"], event)


async def on_status_change(conn: asyncpg.Connection, row: asyncpg.Record | dict[str, Any], *,
                           app_url: str) -> list[int]:
    """Open, update or resolve the connection's incident for a status change just recorded in `conn`'s
    transaction (`row`: connection_id, user_id, account_id, status, reason, error_code). Returns the outbox ids
    of the events it wrote, for publish_now after the commit. `app_url`: Settings.app_url (the notice's
    action_url)."""
    entries = await incident_change(Notices(conn), row, app_url)
    return await Outbox(conn).add(entries)


async def incident_change(store: IncidentStore, row: Mapping[str, Any], app_url: str) -> list[outbox.OutboxEntry]:
    """The incident's change through `store`, and the events it makes (none, or one)."""
    # The caller's UPDATE of mailbox_connections holds the connection's row lock, so status changes of one
    # connection reach this point one at a time: no two incidents open for one connection.
    incident = await store.open_incident(row["connection_id"])
    step = notices.on_status_change(incident, row["status"])
    if step is Step.OPEN:
        changed = await store.open(row["connection_id"], row["user_id"], row["account_id"], row["status"],
                                   row["reason"], row["error_code"])
        kind = notices.ACTION_REQUIRED
    elif step is Step.RESOLVE and incident is not None:
        changed, kind = await store.resolve(incident.notice_id), notices.RESOLVED
    else:
        if step is Step.UPDATE and incident is not None:
            await store.update(incident.notice_id, row["status"], row["reason"], row["error_code"])
        return []
    return [event_entry(kind, notices.event_id(kind, str(changed["notice_id"])), changed, app_url)]

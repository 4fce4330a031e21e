"""The renewer feeds the same notifications topic as the webhook: the matcher stays the only place
mail becomes engagements."""

from __future__ import annotations

from services.core.adapters.kafka import Publisher
from services.core.domain import events
from services.core.domain.event_types import UNSET, FoundBy, MessageChanged


async def publish_found(publisher: Publisher, *, connection_id: str, account_id: str, message_ids: list[str],
                        source: FoundBy, job_id: str | None = None) -> None:
    if not message_ids:
        return
    records: list[tuple[str, MessageChanged]] = []
    for message_id in message_ids:
        event = MessageChanged(
            connection_id=connection_id, account_id=account_id, message_id=message_id, change_type="created",
            source=source, job_id=job_id or UNSET,
            event_id=events.stable_event_id("message.changed", source, job_id or "", connection_id, message_id))
        records.append((connection_id, event))
    await publisher.publish_many(events.NOTIFICATIONS, records)

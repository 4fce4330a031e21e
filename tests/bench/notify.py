"""Publishes message.changed records straight onto the notifications topic (as the renewer does)."""

from __future__ import annotations

from services.core.domain import events
from tests.bench.harness import BenchStack


async def publish_changes(bench: BenchStack, connection_id: str, account_id: str, message_ids: list[str]) -> None:
    records = [(connection_id, events.envelope("message.changed", {
        "connection_id": connection_id, "account_id": account_id, "message_id": m, "change_type": "created",
        "source": "delta"})) for m in message_ids]
    for start in range(0, len(records), 500):
        await bench.publisher.publish_many(events.NOTIFICATIONS, records[start:start + 500])

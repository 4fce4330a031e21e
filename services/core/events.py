"""Kafka topics and the event envelope every record carries (CONTRACT.md section 5)."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

DIRECTORY = "crm.directory.v1"
NOTIFICATIONS = "mailsync.notifications.v1"
LIFECYCLE = "mailsync.lifecycle.v1"
ENGAGEMENTS = "mailsync.engagements.v1"
CONNECTION_STATUS = "mailsync.connection-status.v1"


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    compacted: bool = False
    retention_ms: int = 7 * 24 * 3600 * 1000


TOPICS: tuple[TopicSpec, ...] = (
    TopicSpec(DIRECTORY, 6, retention_ms=-1),  # the directory is replayed from the start
    TopicSpec(NOTIFICATIONS, 12),
    TopicSpec(LIFECYCLE, 3),
    TopicSpec(ENGAGEMENTS, 12, retention_ms=30 * 24 * 3600 * 1000),
    TopicSpec(CONNECTION_STATUS, 3, compacted=True),
)


def dlq(topic: str) -> str:
    return f"{topic}.dlq"


ALL_TOPIC_NAMES: tuple[str, ...] = tuple(t.name for t in TOPICS) + tuple(dlq(t.name) for t in TOPICS)


class BadEvent(ValueError):
    """A record that is not a valid event: it goes to the DLQ, never crashes a consumer."""


def now_iso() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def envelope(event_type: str, payload: dict[str, Any], *, event_id: str | None = None) -> dict[str, Any]:
    """A versioned event. Pass a deterministic `event_id` where redeliveries must dedupe."""
    return {
        "type": event_type,
        "version": 1,
        "event_id": event_id or str(uuid.uuid4()),
        "occurred_at": now_iso(),
        **payload,
    }


def stable_event_id(*parts: str) -> str:
    """A uuid5 over the parts: the same effect always gets the same event id."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, "mailsync:" + "|".join(parts)))


def encode(value: dict[str, Any]) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def decode(raw: bytes | None) -> dict[str, Any]:
    if raw is None:
        raise BadEvent("record has no value")
    try:
        value = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadEvent(f"value is not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise BadEvent("value is not a JSON object")
    if _has_nul(value):
        raise BadEvent("value holds a NUL character, which no text column can store")
    if not isinstance(value.get("type"), str):
        raise BadEvent("value has no string 'type'")
    return value


def _has_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_has_nul(k) or _has_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_nul(v) for v in value)
    return False


def require_str(value: dict[str, Any], key: str) -> str:
    item = value.get(key)
    if not isinstance(item, str) or not item:
        raise BadEvent(f"field {key!r} must be a non-empty string")
    return item


def str_list(value: dict[str, Any], key: str) -> list[str]:
    items = value.get(key, [])
    if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
        raise BadEvent(f"field {key!r} must be a list of strings")
    return items

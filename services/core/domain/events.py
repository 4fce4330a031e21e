"""Kafka topics and the event envelope every record carries (docs/contract.md#kafka)."""

from __future__ import annotations

import codecs
import json
import re
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import msgspec

from services.core.domain import json_limits

DIRECTORY = "crm.directory.v1"
NOTIFICATIONS = "mailsync.notifications.v1"
LIFECYCLE = "mailsync.lifecycle.v1"
ENGAGEMENTS = "mailsync.engagements.v1"
CONNECTION_STATUS = "mailsync.connection-status.v1"
NOTICES = "mailsync.notices.v1"
SENDS = "mailsync.sends.v1"


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
    TopicSpec(NOTICES, 6),  # keyed by user_id; the host application turns them into e-mails
    TopicSpec(SENDS, 6),  # keyed by user_id: send.completed / send.failed for the host application
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


MAX_RECORD_BYTES = 1024 * 1024
# NUL fits no text column; a lone surrogate cannot be encoded as UTF-8 again (for the DLQ or PostgreSQL).
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def decode(raw: bytes | None) -> dict[str, Any]:
    """A record's value as an event, or BadEvent with the reason. Never raises anything else: size and
    nesting are bounded before parsing, so no record can crash a consumer loop."""
    if raw is None:
        raise BadEvent("record has no value")
    value = _plain(raw)
    if value is None:
        return _decode_checked(raw)
    if not isinstance(value, dict):
        raise BadEvent("value is not a JSON object")
    if not isinstance(value.get("type"), str):
        raise BadEvent("value has no string 'type'")
    return value


_FAST = msgspec.json.Decoder()
_BRACKETS = (b"[", b"{")


def is_shallow(raw: bytes, max_depth: int = json_limits.MAX_DEPTH) -> bool:
    """Nesting can be no deeper than the number of brackets (those inside strings included): when that is
    within the limit, json_limits' byte-by-byte scan has nothing to find."""
    return sum(raw.count(b) for b in _BRACKETS) <= max_depth


def is_plain(raw: bytes) -> bool:
    """Within the size limit, shallow by its bracket count, no BOM and no \\u escape, so no NUL or lone
    surrogate can be in it (JSON forbids raw control characters, and a raw surrogate is not UTF-8: both
    parsers refuse those). Such a record may be parsed by msgspec without json_limits' checks."""
    return (len(raw) <= MAX_RECORD_BYTES and b"\\u" not in raw and not raw.startswith(codecs.BOM_UTF8)
            and is_shallow(raw))


def _plain(raw: bytes) -> Any | None:
    """The common case, parsed by msgspec. msgspec reads a subset of what json.loads reads, with the same
    values; anything else (a BOM, NaN, a huge number, malformed text) returns None and takes the checked
    path, which gives today's answer and reason."""
    if not is_plain(raw):
        return None
    try:
        return _FAST.decode(raw)
    except (msgspec.DecodeError, RecursionError):
        return None


def _decode_checked(raw: bytes) -> dict[str, Any]:
    """json_limits' bounded parse, then NUL and lone surrogates refused anywhere (keys included)."""
    try:
        value = json_limits.loads(raw, max_bytes=MAX_RECORD_BYTES)
    except json_limits.JsonRefused as exc:
        raise BadEvent(str(exc)) from None
    if not isinstance(value, dict):
        raise BadEvent("value is not a JSON object")
    if _has_unstorable(value):
        raise BadEvent("value holds a NUL character or a lone surrogate, which no text column can store")
    if not isinstance(value.get("type"), str):
        raise BadEvent("value has no string 'type'")
    return value


def _has_unstorable(value: Any) -> bool:
    # Depth is bounded by json_limits, so this recursion is too.
    if isinstance(value, str):
        return _UNSTORABLE.search(value) is not None
    if isinstance(value, dict):
        return any(_has_unstorable(k) or _has_unstorable(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_unstorable(v) for v in value)
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

"""Pure parsing of Graph's change and lifecycle notification bodies."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

MAX_ITEMS = 1000


class BadPayload(ValueError):
    """The body is not a Graph notification; the message says what is wrong (answered with 400)."""


@dataclass(frozen=True)
class ChangeNotification:
    subscription_id: str
    client_state: str
    change_type: str
    tenant_id: str
    message_id: str
    etag: str


@dataclass(frozen=True)
class LifecycleNotification:
    subscription_id: str
    client_state: str
    tenant_id: str
    lifecycle_event: str


LIFECYCLE_EVENTS = frozenset({"reauthorizationRequired", "subscriptionRemoved", "missed"})
CHANGE_TYPES = frozenset({"created", "updated", "deleted"})


def _items(body: Any) -> list[dict[str, Any]]:
    if not isinstance(body, dict):
        raise BadPayload("body must be a JSON object with a 'value' array")
    items = body.get("value")
    if not isinstance(items, list):
        raise BadPayload("body must have a 'value' array")
    if len(items) > MAX_ITEMS:
        raise BadPayload(f"'value' holds more than {MAX_ITEMS} notifications")
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise BadPayload(f"value[{i}] must be an object")
    return items


def _text(item: dict[str, Any], key: str, i: int, *, required: bool = True, limit: int = 1024) -> str:
    value = item.get(key)
    if value is None and not required:
        return ""
    if not isinstance(value, str) or (required and not value):
        raise BadPayload(f"value[{i}].{key} must be a non-empty string")
    if len(value) > limit:
        raise BadPayload(f"value[{i}].{key} is too long")
    if "\x00" in value:
        raise BadPayload(f"value[{i}].{key} contains a NUL character")
    return value


def _message_id(item: dict[str, Any], i: int) -> tuple[str, str]:
    data = item.get("resourceData")
    if isinstance(data, dict) and isinstance(data.get("id"), str) and data["id"]:
        etag = data.get("@odata.etag")
        return data["id"], etag if isinstance(etag, str) else ""
    resource = _text(item, "resource", i)
    parts = resource.split("/")
    if len(parts) >= 4 and parts[-2].lower() == "messages" and parts[-1]:
        return parts[-1], ""
    raise BadPayload(f"value[{i}] names no message (resourceData.id or resource)")


def parse_change_notifications(body: Any) -> list[ChangeNotification]:
    parsed = []
    for i, item in enumerate(_items(body)):
        change_type = _text(item, "changeType", i)
        if change_type not in CHANGE_TYPES:
            raise BadPayload(f"value[{i}].changeType {change_type[:40]!r} is not created, updated or deleted")
        message_id, etag = _message_id(item, i)
        parsed.append(ChangeNotification(
            subscription_id=_text(item, "subscriptionId", i, limit=200),
            client_state=_text(item, "clientState", i, required=False, limit=256),
            change_type=change_type,
            tenant_id=_text(item, "tenantId", i, required=False, limit=200),
            message_id=message_id,
            etag=etag,
        ))
    return parsed


def parse_lifecycle_notifications(body: Any) -> list[LifecycleNotification]:
    parsed = []
    for i, item in enumerate(_items(body)):
        event = _text(item, "lifecycleEvent", i)
        if event not in LIFECYCLE_EVENTS:
            raise BadPayload(f"value[{i}].lifecycleEvent {event[:40]!r} is unknown")
        parsed.append(LifecycleNotification(
            subscription_id=_text(item, "subscriptionId", i, limit=200),
            client_state=_text(item, "clientState", i, required=False, limit=256),
            tenant_id=_text(item, "tenantId", i, required=False, limit=200),
            lifecycle_event=event,
        ))
    return parsed

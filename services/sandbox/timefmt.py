"""Time formats Graph uses: seconds for message times, seven fractional digits for subscriptions."""

from __future__ import annotations

from datetime import UTC, datetime


def now() -> datetime:
    return datetime.now(UTC)


def graph_time(at: datetime) -> str:
    """Message times: `2024-05-01T10:00:00Z`."""
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def graph_time7(at: datetime) -> str:
    """Subscription times: `2024-05-01T10:00:00.1234560Z` (Graph writes seven digits)."""
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f") + "0Z"


def notification_time(at: datetime) -> str:
    """Times inside notification bodies: `2024-05-01T10:00:00.1234560+00:00`."""
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f") + "0+00:00"


def parse_time(value: str) -> datetime:
    """ISO-8601 with `Z` or an offset and any number of fractional digits; naive means UTC."""
    text = value.strip().strip("'\"")
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    head, dot, tail = text.partition(".")
    if dot:
        digits = "".join(c for c in tail if c.isdigit())
        text = f"{head}.{digits[:6].ljust(6, '0')}{tail[len(digits):]}"
    parsed = datetime.fromisoformat(text)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)

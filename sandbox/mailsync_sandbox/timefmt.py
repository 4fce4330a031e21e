"""Time formats Graph uses: seconds for message times, seven fractional digits for subscriptions, and
local offsets where the time was given with one.

Graph writes some times with the sender's or the mailbox's local offset and seven fractional digits
(`2022-01-02T03:12:18.2257768+05:30`, as in microsoft-graph-docs-contrib examples of messages and
events). A message delivered to the sandbox with a `received_at` carrying a non-zero offset keeps it:
`graph_time` writes such a time in that form; UTC times keep Graph's usual `…Z` form.
"""

from __future__ import annotations

from datetime import UTC, datetime


def now() -> datetime:
    return datetime.now(UTC)


def graph_time(at: datetime) -> str:
    """Message times: `2024-05-01T10:00:00Z`, or `2024-05-01T15:30:00.0000000+05:30` for a time that carries
    a non-zero offset (kept as given, seven fractional digits)."""
    offset = at.utcoffset()
    if offset:
        stamp = at.strftime("%Y-%m-%dT%H:%M:%S.%f") + "0"
        minutes = int(offset.total_seconds()) // 60
        sign = "+" if minutes >= 0 else "-"
        hours, mins = divmod(abs(minutes), 60)
        return f"{stamp}{sign}{hours:02d}:{mins:02d}"
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def graph_time7(at: datetime) -> str:
    """Subscription times: `2024-05-01T10:00:00.1234560Z` (Graph writes seven digits)."""
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f") + "0Z"


def notification_time(at: datetime) -> str:
    """Times inside notification bodies: `2024-05-01T10:00:00.1234560+00:00`."""
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f") + "0+00:00"


def parse_time(value: str) -> datetime:
    """ISO-8601 with `Z` or an offset and any number of fractional digits; naive means UTC.

    The offset after the fraction is kept (`2022-01-02T03:12:18.2257768+05:30` is 2022-01-01T21:42:18 UTC);
    digits beyond microseconds are dropped."""
    text = value.strip().strip("'\"")
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    head, dot, tail = text.partition(".")
    if dot:
        count = 0
        while count < len(tail) and tail[count].isdigit():
            count += 1
        digits = tail[:count]
        text = f"{head}.{digits[:6].ljust(6, '0')}{tail[count:]}"
    parsed = datetime.fromisoformat(text)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)

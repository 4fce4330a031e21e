"""Pure scheduling arithmetic for the renewer: spread polls over the hour, page time ranges."""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta


def poll_offset(connection_id: str, interval: timedelta) -> timedelta:
    """A stable offset in [0, interval): mailboxes spread evenly instead of all polling at :00."""
    digest = int.from_bytes(hashlib.sha256(connection_id.encode()).digest()[:8], "big")
    return timedelta(seconds=(digest % max(1, int(interval.total_seconds() * 1000))) / 1000)


def next_poll_at(connection_id: str, now: datetime, interval: timedelta) -> datetime:
    """The next slot of this mailbox strictly after `now`: the same minute of every hour."""
    offset = poll_offset(connection_id, interval)
    epoch = datetime(2000, 1, 1, tzinfo=now.tzinfo)
    periods = (now - epoch - offset) // interval + 1
    return epoch + offset + periods * interval


def windows(since: datetime, until: datetime, size: timedelta) -> list[tuple[datetime, datetime]]:
    """Half-open [start, end) windows covering [since, until), newest first (recent mail lands first)."""
    if until <= since:
        return []
    out = []
    end = until
    while end > since:
        start = max(since, end - size)
        out.append((start, end))
        end = start
    return out


def estimate_total(seen: int, covered: timedelta, total: timedelta) -> int:
    """Messages expected in the whole range, extrapolated from the part already listed."""
    if covered <= timedelta(0):
        return seen
    if covered >= total:
        return seen
    return max(seen, round(seen * (total / covered)))


def iso(at: datetime) -> str:
    return at.strftime("%Y-%m-%dT%H:%M:%SZ")

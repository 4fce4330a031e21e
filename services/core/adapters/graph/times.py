"""The one parser of the times Graph writes. Pure.

Graph writes `2024-05-01T10:00:00Z` for message times, seven fractional digits for subscriptions
(`2024-05-01T10:00:00.1234567Z`) and sometimes a local offset after the fraction
(`2022-01-02T03:12:18.2257768+05:30`, docs/graph.md#times). The parser this replaces
cut the fraction to six digits by hand and swallowed the offset's digits with it, reading the example
above as 03:12:18 UTC instead of 21:42:18.225776 UTC the day before. Everything in services/ that reads
a Graph time comes here (subscription expiries, message receivedDateTime/sentDateTime).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone

_GRAPH_TIME = re.compile(
    r"""^(?P<date>\d{4}-\d{2}-\d{2})[Tt ]
        (?P<h>\d{2}):(?P<m>\d{2})(?::(?P<s>\d{2}))?
        (?:[.,](?P<frac>\d{1,30}))?
        (?P<zone>[Zz]|(?P<sign>[+-])(?P<zh>\d{2})(?::?(?P<zm>\d{2}))?)?$""",
    re.VERBOSE,
)


def parse_graph_time(value: str) -> datetime:
    """An ISO 8601 time from Graph as an aware UTC datetime.

    Any number of fractional digits (truncated to the microsecond), `Z` or a `±hh:mm` / `±hhmm` / `±hh`
    offset (kept, then converted to UTC); no zone at all means UTC. Raises ValueError for anything else."""
    match = _GRAPH_TIME.match(value.strip())
    if match is None:
        raise ValueError(f"not a Graph time: {value[:60]!r}")
    frac = (match["frac"] or "")[:6].ljust(6, "0")
    zone = UTC
    if match["sign"]:
        minutes = int(match["zh"]) * 60 + int(match["zm"] or 0)
        if minutes >= 24 * 60:
            raise ValueError(f"offset out of range: {value[:60]!r}")
        zone = timezone(timedelta(minutes=-minutes if match["sign"] == "-" else minutes))
    year, month, day = (int(p) for p in match["date"].split("-"))
    local = datetime(year, month, day, int(match["h"]), int(match["m"]), int(match["s"] or 0), int(frac),
                     tzinfo=zone)
    return local.astimezone(UTC)


def parse_graph_time_or_none(value: object) -> datetime | None:
    """For optional fields of Graph resources: anything unreadable is None, never an exception."""
    if not isinstance(value, str) or not value:
        return None
    try:
        return parse_graph_time(value)
    except (ValueError, OverflowError):
        return None

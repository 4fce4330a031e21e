"""OData query options as Graph understands them: `$select`, `$top`, `$skip`, `$filter`, `$orderby`,
and the `Prefer` header (`odata.maxpagesize=N`, `IdType="ImmutableId"`)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from mailsync_sandbox.timefmt import parse_time


class ODataError(Exception):
    """A query option Graph would refuse: answered with `status` and Graph error `code`."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def parse_select(query: Mapping[str, str], known: tuple[str, ...], entity: str) -> list[str] | None:
    """The canonical names of `$select`, or None when absent. Unknown names are a 400, as on Graph."""
    raw = query.get("$select")
    if raw is None or not raw.strip():
        return None
    canonical = {k.lower(): k for k in known}
    out: list[str] = []
    for name in (n.strip() for n in raw.split(",")):
        if not name:
            continue
        found = canonical.get(name.lower())
        if found is None:
            raise ODataError(400, "RequestBroker--ParseUri",
                             f"Could not find a property named '{name}' on type 'microsoft.graph.{entity}'.")
        if found not in out:
            out.append(found)
    return out


def parse_int(query: Mapping[str, str], name: str, *, default: int, low: int = 0, high: int | None = None) -> int:
    raw = query.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ODataError(400, "BadRequest", f"Invalid value '{raw}' for query option {name}.") from None
    if value < low or (high is not None and value > high):
        raise ODataError(400, "BadRequest", f"Invalid value '{raw}' for query option {name}: out of range.")
    return value


def parse_prefer(headers: Mapping[str, str]) -> dict[str, str]:
    """`Prefer: odata.maxpagesize=50, IdType="ImmutableId"` -> {"odata.maxpagesize": "50", "idtype": ...}."""
    out: dict[str, str] = {}
    for part in headers.get("Prefer", "").split(","):
        name, _, value = part.strip().partition("=")
        if name:
            out[name.strip().lower()] = value.strip().strip('"')
    return out


def max_page_size(headers: Mapping[str, str]) -> int | None:
    raw = parse_prefer(headers).get("odata.maxpagesize")
    if raw is None:
        return None
    try:
        return max(1, int(raw))
    except ValueError:
        return None


@dataclass(frozen=True)
class Condition:
    field: str
    op: str
    value: Any


_CLAUSE = re.compile(r"^\s*(\w+)\s+(eq|ne|ge|gt|le|lt)\s+(.+?)\s*$", re.IGNORECASE)
_AND = re.compile(r"\s+and\s+", re.IGNORECASE)


def parse_filter(raw: str, types: Mapping[str, str]) -> list[Condition]:
    """Conjunctions of `field op literal`; `types` maps field names to `datetime`, `bool` or `str`."""
    canonical = {k.lower(): k for k in types}
    conditions = []
    for clause in _AND.split(raw.strip()):
        match = _CLAUSE.match(clause.strip("() "))
        if match is None:
            raise ODataError(400, "BadRequest", f"Invalid filter clause: '{clause}'.")
        name = canonical.get(match.group(1).lower())
        if name is None:
            raise ODataError(400, "ErrorInvalidProperty",
                             f"The property '{match.group(1)}' does not support filtering.")
        literal = match.group(3)
        value: Any
        try:
            if types[name] == "datetime":
                value = parse_time(literal)
            elif types[name] == "bool":
                if literal.lower() not in ("true", "false"):
                    raise ValueError(literal)
                value = literal.lower() == "true"
            else:
                if not (literal.startswith("'") and literal.endswith("'") and len(literal) >= 2):
                    raise ValueError(literal)
                value = literal[1:-1].replace("''", "'")
        except ValueError:
            raise ODataError(400, "BadRequest", f"Invalid literal '{literal}' for '{name}'.") from None
        conditions.append(Condition(name, match.group(2).lower(), value))
    return conditions


def holds(condition: Condition, actual: Any) -> bool:
    if actual is None:
        return condition.op == "ne" and condition.value is not None
    a: Any = actual.lower() if isinstance(actual, str) else actual
    b: Any = condition.value.lower() if isinstance(condition.value, str) else condition.value
    if isinstance(a, datetime) != isinstance(b, datetime):
        return False
    op = condition.op
    return bool(a == b if op == "eq" else a != b if op == "ne" else a >= b if op == "ge" else a > b if op == "gt"
                else a <= b if op == "le" else a < b)

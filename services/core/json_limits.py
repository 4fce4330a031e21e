"""Bounds checked before any JSON is parsed: size and nesting depth.

`json.loads` recurses once per nesting level, so a few thousand `[` raise RecursionError (or worse, in
a C extension, exhaust the stack). Every place input enters (HTTP bodies, Kafka records, Graph answers)
checks the raw bytes with one linear scan first, so a hostile value is refused with a reason instead of
crashing the handler or the consumer loop. Pure: no I/O.
"""

from __future__ import annotations

import json
from typing import Any

MAX_DEPTH = 64  # Graph payloads and our events nest at most ~6 levels
MAX_BYTES = 1024 * 1024

_OPEN = frozenset(b"[{")
_CLOSE = frozenset(b"]}")
_QUOTE = ord('"')
_BACKSLASH = ord("\\")


class JsonRefused(ValueError):
    """The value is too large, too deep or not JSON; the message says which (never the value)."""


def nesting_depth(raw: bytes, *, stop_after: int = MAX_DEPTH) -> int:
    """The deepest `[`/`{` nesting outside strings, scanning at most until `stop_after` is exceeded."""
    depth = deepest = 0
    in_string = escaped = False
    for byte in raw:
        if in_string:
            if escaped:
                escaped = False
            elif byte == _BACKSLASH:
                escaped = True
            elif byte == _QUOTE:
                in_string = False
        elif byte == _QUOTE:
            in_string = True
        elif byte in _OPEN:
            depth += 1
            if depth > deepest:
                deepest = depth
                if deepest > stop_after:
                    return deepest
        elif byte in _CLOSE:
            depth -= 1
    return deepest


def check(raw: bytes, *, max_bytes: int = MAX_BYTES, max_depth: int = MAX_DEPTH) -> None:
    if len(raw) > max_bytes:
        raise JsonRefused(f"value is larger than {max_bytes} bytes")
    if nesting_depth(raw, stop_after=max_depth) > max_depth:
        raise JsonRefused(f"value nests deeper than {max_depth} levels")


def loads(raw: bytes | str, *, max_bytes: int = MAX_BYTES, max_depth: int = MAX_DEPTH) -> Any:
    """`json.loads` behind the bounds; every failure is a JsonRefused with a reason."""
    data = raw.encode("utf-8", "surrogatepass") if isinstance(raw, str) else raw
    check(data, max_bytes=max_bytes, max_depth=max_depth)
    try:
        return json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise JsonRefused(f"value is not JSON: {exc}") from None
    except (RecursionError, MemoryError, ValueError) as exc:  # belt and braces: the scan should prevent these
        raise JsonRefused(f"value could not be parsed: {type(exc).__name__}") from None

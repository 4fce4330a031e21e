"""Bounds checked before any JSON is parsed: size and nesting depth.

`json.loads` recurses once per nesting level, so a few thousand `[` raise RecursionError (or worse, in
a C extension, exhaust the stack). Every place input enters (HTTP bodies, Kafka records, Graph answers)
checks the raw bytes with one linear scan first, so a hostile value is refused with a reason instead of
crashing the handler or the consumer loop. Pure: no I/O.
"""

from __future__ import annotations

import json
import re
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


def loads(raw: bytes | str, *, max_bytes: int = MAX_BYTES, max_depth: int = MAX_DEPTH,
          lone_surrogates: str = "refuse") -> Any:
    """`json.loads` behind the bounds; every failure is a JsonRefused with a reason.

    JSON may escape half a UTF-16 pair (`"\\ud800"`), which no UTF-8 text (PostgreSQL, Kafka, logs) can hold:
    `lone_surrogates="refuse"` refuses such input (what clients send us), `"replace"` turns each into U+FFFD
    (what Graph sends: a broken emoji in a subject must not make the message unreadable)."""
    data = raw.encode("utf-8", "surrogatepass") if isinstance(raw, str) else raw
    check(data, max_bytes=max_bytes, max_depth=max_depth)
    try:
        value = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise JsonRefused(f"value is not JSON: {exc}") from None
    except (RecursionError, MemoryError, ValueError) as exc:  # belt and braces: the scan should prevent these
        raise JsonRefused(f"value could not be parsed: {type(exc).__name__}") from None
    if b"\\u" not in data or not _has_surrogate(value):
        return value
    if lone_surrogates == "replace":
        return _replace_surrogates(value)
    raise JsonRefused("value holds a lone surrogate (half a UTF-16 pair), which is not text")


_SURROGATE = re.compile("[\ud800-\udfff]")


def holds_lone_surrogate(raw: bytes) -> bool:
    """Whether JSON text escapes half a UTF-16 pair (False for text that is not JSON: its parser decides)."""
    if b"\\u" not in raw:
        return False
    try:
        return _has_surrogate(json.loads(raw))
    except (ValueError, RecursionError):
        return False


def _has_surrogate(value: Any) -> bool:
    # Depth is bounded by `check`, so this recursion is too.
    if isinstance(value, str):
        return _SURROGATE.search(value) is not None
    if isinstance(value, dict):
        return any(_has_surrogate(k) or _has_surrogate(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_surrogate(v) for v in value)
    return False


def _replace_surrogates(value: Any) -> Any:
    if isinstance(value, str):
        return _SURROGATE.sub("\ufffd", value)
    if isinstance(value, dict):
        return {_replace_surrogates(k): _replace_surrogates(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_replace_surrogates(v) for v in value]
    return value

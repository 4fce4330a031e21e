"""Injected faults: a typed configuration that `POST /sandbox/faults` merges into.

Keys (all optional in a request; anything else is a 400, so typos do not pass silently):
- `throttle`: `{"per_mailbox_per_10min": 10000, "concurrent": 4}` per application and mailbox.
- `notification_drop_rate`, `notification_duplicate_rate`: 0.0-1.0 per change notification.
- `notification_delay_ms`: extra delay before a change notification is first sent.
- `notification_retry_base_ms` (60000) and `notification_retry_max_s` (14400): back-off of failed deliveries,
  in sandbox time (notifier.py; speed the clock up rather than shrinking these).
- `notification_timeout_ms` (3000): how long Graph waits for a notification endpoint.
- `expire_delta_tokens`: true expires every delta/skip token issued before this call.
- `access_token_lifetime_s` (4500): lifetime of newly issued access tokens.
- `token_endpoint_status` (null) and `token_endpoint_fail_count` (null = for ever): the token endpoint
  answers that status N times, then recovers.
- `graph_latency_ms` (0): every Graph request takes this long (makes concurrency observable).
- `batch_424` (false): a `$batch` in which any step was throttled answers `424 Failed Dependency` as a
  whole (Graph's throttling guidance documents it) instead of `200` with inner `429`s.
- `batch_lowercase_headers` (false): headers inside `$batch` step responses in lower case (`retry-after`,
  `location`, `content-type`), as the JSON batching document's examples show them.
- `reset: true`: back to the defaults first, then the other keys of the same request.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any


class FaultError(ValueError):
    """A fault request that cannot be applied (answered 400)."""


@dataclass
class Throttle:
    per_mailbox_per_10min: int = 10_000
    concurrent: int = 4


@dataclass
class Faults:
    throttle: Throttle = field(default_factory=Throttle)
    notification_drop_rate: float = 0.0
    notification_duplicate_rate: float = 0.0
    notification_delay_ms: int = 0
    notification_retry_base_ms: int = 60_000
    notification_retry_max_s: float = 4 * 3600.0
    notification_timeout_ms: int = 3000
    expire_delta_tokens: bool = False
    access_token_lifetime_s: int = 4500
    token_endpoint_status: int | None = None
    token_endpoint_fail_count: int | None = None
    graph_latency_ms: int = 0
    batch_424: bool = False
    batch_lowercase_headers: bool = False
    delta_epoch: int = 0  # bumped each time expire_delta_tokens is set; not settable

    def as_json(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out.pop("delta_epoch")
        return out


def _number(key: str, value: Any, *, low: float, high: float | None = None, integer: bool = False) -> Any:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise FaultError(f"{key} must be a number")
    if integer and int(value) != value:
        raise FaultError(f"{key} must be an integer")
    if value < low or (high is not None and value > high):
        raise FaultError(f"{key} must be between {low} and {high}" if high is not None else f"{key} must be >= {low}")
    return int(value) if integer else float(value)


def _apply_throttle(throttle: Throttle, value: Any) -> None:
    if not isinstance(value, dict):
        raise FaultError("throttle must be an object")
    unknown = set(value) - {"per_mailbox_per_10min", "concurrent"}
    if unknown:
        raise FaultError(f"unknown throttle keys: {', '.join(sorted(unknown))}")
    if "per_mailbox_per_10min" in value:
        throttle.per_mailbox_per_10min = _number("throttle.per_mailbox_per_10min", value["per_mailbox_per_10min"],
                                                 low=1, integer=True)
    if "concurrent" in value:
        throttle.concurrent = _number("throttle.concurrent", value["concurrent"], low=1, integer=True)


def apply(current: Faults, body: Any) -> Faults:
    """A new configuration: `current` with `body` merged in (nothing changes when `body` is invalid)."""
    if not isinstance(body, dict):
        raise FaultError("the body must be a JSON object")
    fresh = Faults(delta_epoch=current.delta_epoch) if body.get("reset") is True else dataclasses.replace(
        current, throttle=dataclasses.replace(current.throttle))
    for key, value in body.items():
        if key == "reset":
            if not isinstance(value, bool):
                raise FaultError("reset must be a boolean")
        elif key == "throttle":
            _apply_throttle(fresh.throttle, value)
        elif key in ("notification_drop_rate", "notification_duplicate_rate"):
            setattr(fresh, key, _number(key, value, low=0.0, high=1.0))
        elif key in ("notification_delay_ms", "notification_retry_base_ms", "graph_latency_ms"):
            setattr(fresh, key, _number(key, value, low=0, integer=True))
        elif key in ("notification_timeout_ms", "access_token_lifetime_s"):
            setattr(fresh, key, _number(key, value, low=1, integer=True))
        elif key == "notification_retry_max_s":
            fresh.notification_retry_max_s = _number(key, value, low=0)
        elif key in ("batch_424", "batch_lowercase_headers"):
            if not isinstance(value, bool):
                raise FaultError(f"{key} must be a boolean")
            setattr(fresh, key, value)
        elif key == "expire_delta_tokens":
            if not isinstance(value, bool):
                raise FaultError("expire_delta_tokens must be a boolean")
            fresh.expire_delta_tokens = value
            if value:
                fresh.delta_epoch += 1
        elif key == "token_endpoint_status":
            fresh.token_endpoint_status = None if value is None else _number(key, value, low=400, high=599,
                                                                              integer=True)
        elif key == "token_endpoint_fail_count":
            fresh.token_endpoint_fail_count = None if value is None else _number(key, value, low=0, integer=True)
        else:
            raise FaultError(f"unknown fault key {key!r:.60}")
    return fresh

"""Outlook's throttling, per application and mailbox: requests per 10 minutes and concurrent requests.

Every request counts against the window, throttled ones too (as Graph documents), so a client that
ignores `Retry-After` stays throttled. A request that arrives before the `Retry-After` last given to
the same application for the same mailbox has elapsed is counted as an early retry, unless it arrived
within IN_FLIGHT_GRACE_S of that 429: such a request was already on the wire when the client learnt
of the throttling (concurrent requests), so no client could have held it back.

The 10-minute window and the rate-limit `Retry-After` run on the sandbox clock (clock.py); the header
is given in real seconds (sandbox seconds / speed), as `expires_in` is, so a client that waits what it
is told is never early. Concurrency throttling is about requests in flight, which take real time: its
`Retry-After` (0.5 s) and the in-flight grace stay real.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

from mailsync_sandbox.clock import Clock
from mailsync_sandbox.faults import Throttle
from mailsync_sandbox.stats import Stats

WINDOW_S = 600.0
CONCURRENCY_RETRY_AFTER_S = 0.5
IN_FLIGHT_GRACE_S = 0.05


@dataclass
class _Key:
    arrivals: deque[float] = field(default_factory=deque)
    in_flight: int = 0
    retry_not_before: float = 0.0
    throttled_at: float = 0.0


@dataclass(frozen=True)
class Throttled:
    message: str
    retry_after: float  # real seconds

    @property
    def header(self) -> str:
        """Whole seconds from one second up, else a fraction (Graph sends both)."""
        if self.retry_after >= 1:
            return str(math.ceil(self.retry_after))
        millis = max(1, math.ceil(self.retry_after * 1000))  # rounded up: waiting that long is never early
        return f"{millis / 1000:.3f}".rstrip("0").rstrip(".")


class Throttler:
    def __init__(self, stats: Stats, clock: Clock | None = None) -> None:
        self._stats = stats
        self._clock = clock or Clock()
        self._keys: dict[tuple[str, str], _Key] = {}

    def clear(self) -> None:
        self._keys.clear()

    def enter(self, app_id: str, mailbox: str, limits: Throttle) -> Throttled | None:
        """Admit a request (then `leave` must follow) or say why not."""
        now = self._clock.time()
        speed = self._clock.speed
        key = self._keys.setdefault((app_id, mailbox), _Key())
        counts = self._stats.mailboxes[mailbox]
        counts.requests += 1
        if now < key.retry_not_before and now > key.throttled_at + IN_FLIGHT_GRACE_S * speed:
            counts.early_retries += 1
        key.arrivals.append(now)
        while key.arrivals and key.arrivals[0] <= now - WINDOW_S:
            key.arrivals.popleft()
        decision: Throttled | None = None
        if len(key.arrivals) > limits.per_mailbox_per_10min:
            # Free again once enough of the window's arrivals have aged out.
            oldest_needed = key.arrivals[len(key.arrivals) - limits.per_mailbox_per_10min]
            decision = Throttled("Application is over its MailboxRequestRate limit.",
                                 max(0.001, self._clock.real_seconds(oldest_needed + WINDOW_S - now)))
        elif key.in_flight >= limits.concurrent:
            decision = Throttled("Application is over its MailboxConcurrency limit.", CONCURRENCY_RETRY_AFTER_S)
        if decision is not None:
            counts.throttled += 1
            if now >= key.retry_not_before:
                key.throttled_at = now
            key.retry_not_before = max(key.retry_not_before, now + decision.retry_after * speed)
            return decision
        key.in_flight += 1
        counts.max_concurrent = max(counts.max_concurrent, key.in_flight)
        return None

    def leave(self, app_id: str, mailbox: str) -> None:
        key = self._keys.get((app_id, mailbox))
        if key is not None and key.in_flight > 0:
            key.in_flight -= 1

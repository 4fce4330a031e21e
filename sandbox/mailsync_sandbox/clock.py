"""The sandbox's own clock, with a speed control so tests can watch hours pass in seconds.

`POST /sandbox/clock {"speed": N}` makes sandbox time run N times faster than real time (N >= 1);
`{"advance_s": S}` jumps it forward S sandbox seconds at once. `/sandbox/reset` puts it back in step
with the real clock at speed 1.

What reads this clock (everything Microsoft schedules): access/refresh token and authorization code
lifetimes, subscription expiry, the notification retry schedule (back-off, 4-hour give-up), the slow
endpoint tallies and their 10-minute delay, throttling windows and `Retry-After`, and the spontaneous
`reauthorizationRequired` timer. Times the sandbox writes come from it too: `expirationDateTime`,
`receivedDateTime` it assigns, token `iat`/`nbf`/`exp` claims, AAD error timestamps.

What stays real: latencies measured on the wire — the 3 s notification timeout, the 2.9 s "slow"
threshold, the 10 s validation timeout — because they measure how fast the receiver (a real process)
answers, not how much Microsoft time has passed.

Durations handed to clients are converted to *real* seconds (sandbox seconds / speed): `expires_in`
and `ext_expires_in` of token responses and `Retry-After` of 429s. The services compare those with
their own real clock, so a 75-minute token at speed 60 is reported as `expires_in: 75` and the
services refresh it when the sandbox considers it expired. Absolute times (`expirationDateTime`, JWT
`exp`) are sandbox times: a client that computes absolute times from its own clock must keep the
simulated span within them (or read `GET /sandbox/clock`).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Callable
from datetime import UTC, datetime

MAX_SPEED = 1_000_000.0


class Clock:
    def __init__(self, *, real: Callable[[], float] = time.time, mono: Callable[[], float] = time.monotonic) -> None:
        self._real, self._mono = real, mono
        self._speed = 1.0
        self._anchor_mono = mono()
        self._anchor_epoch = real()
        self._waiters: set[asyncio.Event] = set()
        self.listeners: list[Callable[[], None]] = []  # called after every speed change or jump

    # --- reading --------------------------------------------------------------------------

    @property
    def speed(self) -> float:
        return self._speed

    def time(self) -> float:
        """Sandbox epoch seconds."""
        return self._anchor_epoch + (self._mono() - self._anchor_mono) * self._speed

    def now(self) -> datetime:
        return datetime.fromtimestamp(self.time(), UTC)

    def real_seconds(self, sandbox_seconds: float) -> float:
        """How long `sandbox_seconds` take on the real clock at the current speed."""
        return sandbox_seconds / self._speed

    def real_whole_seconds(self, sandbox_seconds: float) -> int:
        """`expires_in`-style: whole real seconds, rounded down (a client never holds a token too long), >= 1."""
        return max(1, math.floor(self.real_seconds(sandbox_seconds)))

    def as_json(self) -> dict[str, object]:
        now = self.now()
        return {"speed": self._speed, "now": now.strftime("%Y-%m-%dT%H:%M:%S.%f") + "0Z",
                "offset_s": round(self.time() - self._real(), 3)}

    # --- changing ---------------------------------------------------------------------------

    def _reanchor(self) -> None:
        self._anchor_epoch = self.time()
        self._anchor_mono = self._mono()

    def set_speed(self, speed: float) -> None:
        if not 1 <= speed <= MAX_SPEED:
            raise ValueError(f"speed must be between 1 and {MAX_SPEED:g}")
        self._reanchor()
        self._speed = float(speed)
        self._changed()

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("advance_s must be >= 0: the clock never goes back")
        self._reanchor()
        self._anchor_epoch += seconds
        self._changed()

    def reset(self) -> None:
        """Back in step with the real clock, at speed 1."""
        self._speed = 1.0
        self._anchor_mono = self._mono()
        self._anchor_epoch = self._real()
        self._changed()

    def _changed(self) -> None:
        for event in list(self._waiters):
            event.set()
        for listener in list(self.listeners):
            listener()

    # --- waiting ----------------------------------------------------------------------------

    async def sleep_until(self, when: float) -> None:
        """Until sandbox time `when`, re-planned whenever the speed changes or the clock jumps."""
        while True:
            remaining = when - self.time()
            if remaining <= 0:
                return
            event = asyncio.Event()
            self._waiters.add(event)
            try:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(event.wait(), self.real_seconds(remaining))
            finally:
                self._waiters.discard(event)

"""Per-mailbox request limits that adapt to Graph's answers.

At most `per_mailbox` requests in flight per mailbox (Outlook allows 4). After a 429 nothing is
sent to that mailbox before its Retry-After, and for a cool-down period only one request at a time:
a client that keeps sending 4 after a concurrency 429 just collects more 429s. And a request budget
per mailbox per 10 minutes (the matcher 6,000, the renewer and the subscriber 2,000 each: together
under Outlook's 10,000), so a back-sync or a burst never drives a mailbox into throttling.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

WINDOW_S = 600.0


@dataclass
class _Mailbox:
    sent: deque[float] = field(default_factory=deque)
    in_flight: int = 0
    not_before: float = 0.0
    reduced_until: float = 0.0
    changed: asyncio.Condition = field(default_factory=asyncio.Condition)


class MailboxLimiter:
    def __init__(self, per_mailbox: int = 4, cool_down_s: float = 30.0, budget_per_10min: int = 2000) -> None:
        self._per_mailbox = per_mailbox
        self._cool_down = cool_down_s
        self._budget = budget_per_10min
        self._boxes: dict[str, _Mailbox] = {}

    def _limit(self, box: _Mailbox, now: float) -> int:
        return 1 if now < box.reduced_until else self._per_mailbox

    @asynccontextmanager
    async def slot(self, mailbox: str) -> AsyncIterator[None]:
        box = self._boxes.setdefault(mailbox, _Mailbox())
        async with box.changed:
            await box.changed.wait_for(lambda: box.in_flight < self._limit(box, time.monotonic()))
            box.in_flight += 1
        try:
            # Checked again after every wait: a 429 seen by another request meanwhile moves not_before on,
            # and a request that slept through it must not go out before the new Retry-After.
            while True:
                wait = max(box.not_before - time.monotonic(), self._budget_wait(box))
                if wait <= 0:
                    break
                await asyncio.sleep(wait + random.uniform(0.0, 0.05))
            box.sent.append(time.monotonic())
            yield
        finally:
            async with box.changed:
                box.in_flight -= 1
                box.changed.notify_all()

    def _budget_wait(self, box: _Mailbox) -> float:
        now = time.monotonic()
        while box.sent and box.sent[0] <= now - WINDOW_S:
            box.sent.popleft()
        if len(box.sent) < self._budget:
            return 0.0
        return box.sent[len(box.sent) - self._budget] + WINDOW_S - now

    def throttled(self, mailbox: str, retry_after: float | None) -> None:
        box = self._boxes.setdefault(mailbox, _Mailbox())
        now = time.monotonic()
        box.not_before = max(box.not_before, now + (retry_after if retry_after is not None else 1.0))
        box.reduced_until = now + self._cool_down

"""Per-mailbox request limits that adapt to Graph's answers.

At most `per_mailbox` requests in flight per mailbox (Outlook allows 4). After a 429 nothing is
sent to that mailbox before its Retry-After, and for a cool-down period only one request at a time:
a client that keeps sending 4 after a concurrency 429 just collects more 429s.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field


@dataclass
class _Mailbox:
    in_flight: int = 0
    not_before: float = 0.0
    reduced_until: float = 0.0
    changed: asyncio.Condition = field(default_factory=asyncio.Condition)


class MailboxLimiter:
    def __init__(self, per_mailbox: int = 4, cool_down_s: float = 30.0) -> None:
        self._per_mailbox = per_mailbox
        self._cool_down = cool_down_s
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
            wait = box.not_before - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait + random.uniform(0.0, 0.05))
            yield
        finally:
            async with box.changed:
                box.in_flight -= 1
                box.changed.notify_all()

    def throttled(self, mailbox: str, retry_after: float | None) -> None:
        box = self._boxes.setdefault(mailbox, _Mailbox())
        now = time.monotonic()
        box.not_before = max(box.not_before, now + (retry_after if retry_after is not None else 1.0))
        box.reduced_until = now + self._cool_down

"""Delivers change and lifecycle notifications in the background, the way Graph does.

One queue per (URL, kind). Whatever is due when a POST can start goes into that POST (`value` holds
up to 100 items, of any subscriptions); at most 4 POSTs per URL are in flight. An answer other than
2xx within `notification_timeout_ms` (3 s), or no answer (connection refused, reset, timeout), fails
the whole POST. Its notifications are retried on Microsoft's schedule (microsoft-graph-docs-contrib,
change-notifications-delivery-webhooks: failed deliveries are retried "with exponential backoff" for
up to 4 hours, then dropped): the n-th retry waits `notification_retry_base_ms` (60 s) * 2^(n-1),
capped at one hour — 1, 2, 4, 8, 16, 32, 60, 60 … minutes — and a notification whose next attempt
would fall more than `notification_retry_max_s` (4 h) after it was first queued is discarded
(counted `failed`, and `dropped` as every notification that never arrives). Microsoft does not publish
the base or the cap; these are the sandbox's choice, deterministic so tests can count attempts.

The schedule (back-off, the 4-hour window, the 10-minute tallies and delay below, the
`notification_delay_ms` fault) runs on the sandbox clock (clock.py): speed it up to see hours of
retries in seconds. The 3 s timeout and the 2.9 s "slow" threshold are real: they measure the
receiver.

Faults apply to change notifications: `notification_drop_rate` (never sent), `notification_duplicate_rate`
(sent twice, usually in separate POSTs), `notification_delay_ms` (held back before the first attempt).

Slow endpoints: a POST answered after 2,900 ms (or not at all) is slow. Per URL and 10-minute
window, once 100 notifications were attempted, >= 10 % slow delays new notifications by 10 minutes
and >= 15 % drops them (each affected subscription gets one `missed` lifecycle notification).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from mailsync_sandbox.clock import Clock
from mailsync_sandbox.faults import Faults
from mailsync_sandbox.mailstore import Change
from mailsync_sandbox.stats import Stats
from mailsync_sandbox.subscription_store import Subscription
from mailsync_sandbox.timefmt import notification_time

MAX_BATCH = 100
MAX_POSTS_PER_URL = 4
MAX_BACKOFF_S = 3600.0
SLOW_S = 2.9
TALLY_WINDOW_S = 600.0
TALLY_MINIMUM = 100
DELAY_RATIO, DROP_RATIO, THROTTLE_DELAY_S = 0.10, 0.15, 600.0
DUPLICATE_GAP_S = 0.05


@dataclass
class Pending:
    item: dict[str, Any]
    mailbox: str
    first_at: float
    not_before: float
    attempts: int = 0


@dataclass
class _Endpoint:
    url: str
    queue: list[Pending] = field(default_factory=list)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    posts: int = 0
    in_flight: int = 0
    task: asyncio.Task[None] | None = None


@dataclass
class _Tally:
    started: float
    total: int = 0
    slow: int = 0
    missed_sent: set[str] = field(default_factory=set)


def retry_delay(faults: Faults, attempts: int) -> float:
    """Sandbox seconds before retry number `attempts` (1 = the first retry)."""
    base = faults.notification_retry_base_ms / 1000
    return float(min(base * 2 ** min(attempts - 1, 30), max(MAX_BACKOFF_S, base)))


class Notifier:
    def __init__(self, faults: Callable[[], Faults], stats: Stats, clock: Clock | None = None) -> None:
        self._faults = faults
        self._stats = stats
        self._clock = clock or Clock()
        self._clock.listeners.append(self._clock_changed)
        self._rng = random.Random()
        self._endpoints: dict[tuple[str, str], _Endpoint] = {}
        self._tallies: dict[str, _Tally] = {}
        self._sends: set[asyncio.Task[None]] = set()
        self._adopted: set[asyncio.Task[None]] = set()
        self.session: aiohttp.ClientSession | None = None

    def adopt(self, task: asyncio.Task[None]) -> None:
        """Another background task that delivers (the lifecycle timer): stopped with the notifier."""
        self._adopted.add(task)
        task.add_done_callback(self._adopted.discard)

    def _clock_changed(self) -> None:
        """A speed change or jump: every endpoint re-plans its wait."""
        for endpoint in self._endpoints.values():
            endpoint.wake.set()

    # --- counts -----------------------------------------------------------------------------

    def pending(self) -> int:
        return sum(len(e.queue) for e in self._endpoints.values())

    def in_flight(self) -> int:
        return sum(e.in_flight for e in self._endpoints.values())

    # --- queueing ---------------------------------------------------------------------------

    def change(self, sub: Subscription, change_type: str, change: Change) -> None:
        faults = self._faults()
        resource = f"Users/{change.user_id}/Messages/{change.message_id}"
        item = {
            "subscriptionId": sub.id, "subscriptionExpirationDateTime": notification_time(sub.expires_at),
            "changeType": change_type, "resource": resource,
            "resourceData": {"@odata.type": "#Microsoft.Graph.Message", "@odata.id": resource,
                             "@odata.etag": change.etag, "id": change.message_id},
            "clientState": sub.client_state, "tenantId": sub.tenant_id,
        }
        if self._rng.random() < faults.notification_drop_rate:
            self._stats.notification(sub.user_id, "dropped")
            return
        delay = faults.notification_delay_ms / 1000
        quota = self._quota(sub.notification_url)
        if quota == "drop":
            self._stats.notification(sub.user_id, "dropped")
            self._missed(sub)
            return
        if quota == "delay":
            delay += THROTTLE_DELAY_S
            self._stats.notification(sub.user_id, "delayed")
        self._push(sub.notification_url, "change", item, sub.user_id, delay)
        if self._rng.random() < faults.notification_duplicate_rate:
            self._stats.notification(sub.user_id, "duplicated")
            self._push(sub.notification_url, "change", dict(item), sub.user_id, delay + DUPLICATE_GAP_S)

    def lifecycle(self, sub: Subscription, event: str, *, spontaneous: bool = False) -> bool:
        """Queue one lifecycle notification (only subscriptions with a lifecycleNotificationUrl get any)."""
        if not sub.lifecycle_url:
            return False
        item = {"subscriptionId": sub.id, "subscriptionExpirationDateTime": notification_time(sub.expires_at),
                "tenantId": sub.tenant_id, "clientState": sub.client_state, "lifecycleEvent": event}
        self._push(sub.lifecycle_url, "lifecycle", item, sub.user_id, 0.0)
        self._stats.lifecycle_event(sub.user_id, event, spontaneous=spontaneous)
        return True

    def _missed(self, sub: Subscription) -> None:
        tally = self._tallies[sub.notification_url]
        if sub.id not in tally.missed_sent:
            tally.missed_sent.add(sub.id)
            self.lifecycle(sub, "missed")

    def _push(self, url: str, kind: str, item: dict[str, Any], mailbox: str, delay: float) -> None:
        loop = asyncio.get_running_loop()
        endpoint = self._endpoints.get((url, kind))
        if endpoint is None:
            endpoint = self._endpoints[(url, kind)] = _Endpoint(url)
        if endpoint.task is None or endpoint.task.done():
            endpoint.task = loop.create_task(self._run(endpoint))
        now = self._clock.time()
        endpoint.queue.append(Pending(item, mailbox, now, now + delay))
        endpoint.wake.set()

    def _quota(self, url: str) -> str:
        loop_now = self._clock.time()
        tally = self._tallies.get(url)
        if tally is None or loop_now - tally.started > TALLY_WINDOW_S:
            tally = self._tallies[url] = _Tally(loop_now)
        if tally.total < TALLY_MINIMUM:
            return "ok"
        ratio = tally.slow / tally.total
        return "drop" if ratio >= DROP_RATIO else "delay" if ratio >= DELAY_RATIO else "ok"

    # --- delivery ---------------------------------------------------------------------------

    async def _run(self, endpoint: _Endpoint) -> None:
        loop = asyncio.get_running_loop()
        while True:
            now = self._clock.time()
            ready = [p for p in endpoint.queue if p.not_before <= now]
            if ready and endpoint.posts < MAX_POSTS_PER_URL:
                batch = ready[:MAX_BATCH]
                taken = {id(p) for p in batch}
                endpoint.queue = [p for p in endpoint.queue if id(p) not in taken]
                endpoint.posts += 1
                endpoint.in_flight += len(batch)
                task = loop.create_task(self._send(endpoint, batch))
                self._sends.add(task)
                task.add_done_callback(self._sends.discard)
                continue
            endpoint.wake.clear()
            timeout = None
            if endpoint.queue and endpoint.posts < MAX_POSTS_PER_URL:
                timeout = self._clock.real_seconds(max(0.0, min(p.not_before for p in endpoint.queue) - now))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(endpoint.wake.wait(), timeout)

    async def _send(self, endpoint: _Endpoint, batch: list[Pending]) -> None:
        loop = asyncio.get_running_loop()
        faults = self._faults()
        timeout = faults.notification_timeout_ms / 1000
        started = loop.time()
        status: int | None = None
        try:
            assert self.session is not None, "the notifier is not started"
            async with self.session.post(endpoint.url, json={"value": [p.item for p in batch]},
                                         timeout=aiohttp.ClientTimeout(total=timeout)) as resp:
                status = resp.status
                await resp.read()
        except (aiohttp.ClientError, TimeoutError, OSError, ValueError):
            status = None
        finally:
            endpoint.posts -= 1
            endpoint.in_flight -= len(batch)
            endpoint.wake.set()
        self._record(endpoint.url, batch, status, slow=loop.time() - started > min(SLOW_S, timeout * 0.97))
        if status is not None and 200 <= status < 300:
            for pending in batch:
                self._stats.notification(pending.mailbox, "sent")
            return
        now = self._clock.time()
        for pending in batch:
            pending.attempts += 1
            not_before = now + retry_delay(faults, pending.attempts)
            if not_before - pending.first_at > faults.notification_retry_max_s:
                self._stats.notification(pending.mailbox, "failed")
                self._stats.notification(pending.mailbox, "dropped")
                continue
            self._stats.notification(pending.mailbox, "retried")
            pending.not_before = not_before
            endpoint.queue.append(pending)
        endpoint.wake.set()

    def _record(self, url: str, batch: list[Pending], status: int | None, *, slow: bool) -> None:
        counts = self._stats.endpoints[url]
        counts.posts += 1
        counts.notifications += len(batch)
        counts.last_status = status
        if status is None or not 200 <= status < 300:
            counts.failed_posts += 1
        tally = self._tallies.get(url)
        if slow:
            counts.slow += 1
        if tally is not None:
            tally.total += len(batch)
            tally.slow += len(batch) if slow else 0

    # --- lifecycle of the notifier itself ----------------------------------------------------

    async def clear(self) -> None:
        tasks = [e.task for e in self._endpoints.values() if e.task is not None] + list(self._sends) + list(
            self._adopted)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._endpoints.clear()
        self._tallies.clear()
        self._sends.clear()
        self._adopted.clear()

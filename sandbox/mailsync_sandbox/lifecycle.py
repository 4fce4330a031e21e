"""Graph's own `reauthorizationRequired`: sent without anyone asking as the access token a subscription
was created, renewed or reauthorized with nears expiry.

Microsoft documents (microsoft-graph-docs-contrib, change-notifications-lifecycle-events,
"Reauthorization required"): the notification comes when the access token used to create the subscription
is about to expire (and in other cases such as a revoked grant), Graph keeps sending it periodically until the
subscription is reauthorized, and a subscription that is not reauthorized stops receiving notifications
(they are lost: catch up with delta). The sandbox models it so:

- only subscriptions with a `lifecycleNotificationUrl` get lifecycle notifications;
- the first one is due in the last hour before the token's expiry (at expiry - 60 min + 0..15 min), then
  again every 15-45 minutes of sandbox time while the subscription is not reauthorized, until it expires;
  times come from a generator seeded with the subscription id, so a run is repeatable;
- that schedule is for Microsoft's tokens (60-90 minutes, 75 on average = `access_token_lifetime_s` 4500).
  A token made shorter with that fault gets the same schedule scaled by lifetime / 4500 (a 120 s token:
  first notice 24-48 s after it was issued, then every 24-72 s), so a client that answers each notice
  keeps its subscription authorized instead of being told in a tight loop or too late;
- `PATCH /subscriptions/{id}` or `POST /subscriptions/{id}/reauthorize` with a token valid until a later
  time records that token (subscription_store.Subscription.authorize_with) and the timer starts over
  from the new token's expiry;
- once the token has expired without a reauthorization, change notifications are dropped (state.py)
  until one comes.

Everything runs on the sandbox clock, so `POST /sandbox/clock {"speed": N}` makes hours pass in seconds.
Counted in `GET /sandbox/stats` under `lifecycle` (`reauthorizationRequired`, `spontaneous`), overall and
per mailbox.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from typing import TYPE_CHECKING

from mailsync_sandbox.subscription_store import Subscription

if TYPE_CHECKING:
    from mailsync_sandbox.state import Sandbox

FIRST_LEAD_S = 3600.0  # the first notice comes in the last hour before the token expires ...
FIRST_SPREAD_S = 900.0  # ... at some point in its first 15 minutes
REPEAT_MIN_S, REPEAT_MAX_S = 15 * 60.0, 45 * 60.0
TYPICAL_TOKEN_S = 4500.0  # Microsoft's access tokens live 60-90 minutes, 75 on average
INFINITY = float("inf")


def _rng(sub: Subscription) -> random.Random:
    return random.Random(f"{sub.id}:{sub.token_expires_at}:{sub.reauth_sent}")


def _scale(sub: Subscription) -> float:
    return min(1.0, sub.token_lifetime / TYPICAL_TOKEN_S)


def first_due(sub: Subscription) -> float:
    scale = _scale(sub)
    return sub.token_expires_at - FIRST_LEAD_S * scale + _rng(sub).uniform(0, FIRST_SPREAD_S * scale)


def next_due(sub: Subscription, now: float) -> float:
    scale = _scale(sub)
    return now + _rng(sub).uniform(REPEAT_MIN_S * scale, REPEAT_MAX_S * scale)


class LifecycleTimer:
    def __init__(self, sb: Sandbox) -> None:
        self._sb = sb
        self._task: asyncio.Task[None] | None = None
        self._wake: asyncio.Event | None = None
        sb.clock.listeners.append(self.poke)

    def poke(self) -> None:
        """Something changed (a subscription, a token, the clock): start if needed and re-plan."""
        if self._task is None or self._task.done():
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                return
            self._wake = asyncio.Event()
            self._task = loop.create_task(self._run())
            self._sb.notifier.adopt(self._task)
        if self._wake is not None:
            self._wake.set()

    def tick(self) -> float:
        """Send what is due now; returns when the next one is due (sandbox epoch, inf when none)."""
        sb = self._sb
        now = sb.clock.time()
        soonest = INFINITY
        for sub in sb.subscriptions.live():
            if not sub.lifecycle_url or sub.token_expires_at == INFINITY:
                continue
            if sub.next_reauth_at is None:
                sub.next_reauth_at = first_due(sub)
            if sub.next_reauth_at <= now:
                sb.notifier.lifecycle(sub, "reauthorizationRequired", spontaneous=True)
                sub.reauth_sent += 1
                sub.next_reauth_at = next_due(sub, now)
            soonest = min(soonest, sub.next_reauth_at)
        return soonest

    async def _run(self) -> None:
        clock = self._sb.clock
        while True:
            due = self.tick()
            wake = self._wake
            assert wake is not None
            wake.clear()
            timeout = None if due == INFINITY else clock.real_seconds(max(0.0, due - clock.time()))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), timeout)

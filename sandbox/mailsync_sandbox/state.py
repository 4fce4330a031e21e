"""Everything one sandbox holds, in one object the handlers reach through `request.app[SANDBOX]`."""

from __future__ import annotations

from aiohttp import web

from mailsync_sandbox.clock import Clock
from mailsync_sandbox.faults import Faults
from mailsync_sandbox.flows import Flows
from mailsync_sandbox.lifecycle import LifecycleTimer
from mailsync_sandbox.mailstore import Change, MailStore
from mailsync_sandbox.notifier import Notifier
from mailsync_sandbox.stats import Stats
from mailsync_sandbox.subscription_store import SubscriptionStore
from mailsync_sandbox.throttle import Throttler
from mailsync_sandbox.tokens import TokenStore


class Sandbox:
    def __init__(self) -> None:
        self.clock = Clock()
        self.mail = MailStore(self.clock)
        self.tokens = TokenStore(clock=self.clock)
        self.faults = Faults()
        self.stats = Stats()
        self.throttler = Throttler(self.stats, self.clock)
        self.flows = Flows()
        self.subscriptions = SubscriptionStore(self.clock)
        self.notifier = Notifier(lambda: self.faults, self.stats, self.clock)
        self.lifecycle = LifecycleTimer(self)
        self.mail.listeners.append(self._on_change)

    def _on_change(self, change: Change) -> None:
        now = self.clock.time()
        for sub, change_type in self.subscriptions.for_change(change):
            if sub.paused or (sub.lifecycle_url and sub.token_lapsed(now)):
                # Graph pauses delivery until the subscription is reauthorized (asked for and not answered,
                # or the token it was authorized with has expired); those changes are lost.
                self.stats.notification(sub.user_id, "dropped")
            else:
                self.notifier.change(sub, change_type, change)

    async def reset(self) -> None:
        await self.notifier.clear()
        self.clock.reset()
        self.mail.clear()
        self.tokens.clear()
        self.faults = Faults(delta_epoch=self.faults.delta_epoch + 1)
        self.stats.clear()
        self.throttler.clear()
        self.flows.clear()
        self.subscriptions.clear()


SANDBOX = web.AppKey("sandbox", Sandbox)

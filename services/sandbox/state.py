"""Everything one sandbox holds, in one object the handlers reach through `request.app[SANDBOX]`."""

from __future__ import annotations

from aiohttp import web

from services.sandbox.faults import Faults
from services.sandbox.flows import Flows
from services.sandbox.mailstore import Change, MailStore
from services.sandbox.notifier import Notifier
from services.sandbox.stats import Stats
from services.sandbox.subscription_store import SubscriptionStore
from services.sandbox.throttle import Throttler
from services.sandbox.tokens import TokenStore


class Sandbox:
    def __init__(self) -> None:
        self.mail = MailStore()
        self.tokens = TokenStore()
        self.faults = Faults()
        self.stats = Stats()
        self.throttler = Throttler(self.stats)
        self.flows = Flows()
        self.subscriptions = SubscriptionStore()
        self.notifier = Notifier(lambda: self.faults, self.stats)
        self.mail.listeners.append(self._on_change)

    def _on_change(self, change: Change) -> None:
        for sub, change_type in self.subscriptions.for_change(change):
            if sub.paused:
                # Graph pauses delivery until the subscription is reauthorized; those changes are lost.
                self.stats.notification(sub.user_id, "dropped")
            else:
                self.notifier.change(sub, change_type, change)

    async def reset(self) -> None:
        await self.notifier.clear()
        self.mail.clear()
        self.tokens.clear()
        self.faults = Faults(delta_epoch=self.faults.delta_epoch + 1)
        self.stats.clear()
        self.throttler.clear()
        self.flows.clear()
        self.subscriptions.clear()


SANDBOX = web.AppKey("sandbox", Sandbox)

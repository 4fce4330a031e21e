"""Counters the control API reports at `GET /sandbox/stats`."""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any


@dataclass
class NotificationCounts:
    sent: int = 0  # notifications delivered (2xx), counted per notification, not per POST
    retried: int = 0  # failed attempts that were scheduled again
    dropped: int = 0  # never sent: the drop fault, a paused subscription, an endpoint over its slow quota
    failed: int = 0  # given up after notification_retry_max_s (4 hours of sandbox time): discarded
    duplicated: int = 0  # extra copies made by the duplicate fault
    delayed: int = 0  # held back 10 minutes because their endpoint answers slowly


@dataclass
class LifecycleCounts:
    """Lifecycle notifications queued, by event; `spontaneous` counts the reauthorizationRequired Graph
    sent on its own as a subscription's token neared expiry (the rest were asked for or caused by a
    revocation / the slow-endpoint quota)."""

    reauthorizationRequired: int = 0
    subscriptionRemoved: int = 0
    missed: int = 0
    spontaneous: int = 0


@dataclass
class MailboxCounts:
    requests: int = 0  # Graph requests for this mailbox, throttled ones included
    throttled: int = 0
    max_concurrent: int = 0
    early_retries: int = 0  # requests that came before a Retry-After given to the same app had elapsed
    subscription_renewals: int = 0  # PATCHes of this mailbox's subscriptions
    subscription_reauthorizations: int = 0  # POST /subscriptions/{id}/reauthorize
    delta_requests: int = 0  # delta pages served for this mailbox's folders
    notifications: NotificationCounts = field(default_factory=NotificationCounts)
    lifecycle: LifecycleCounts = field(default_factory=LifecycleCounts)


@dataclass
class EndpointCounts:
    posts: int = 0
    notifications: int = 0
    failed_posts: int = 0
    slow: int = 0  # answered after 2,900 ms or not at all within the timeout
    last_status: int | None = None


@dataclass
class TokenEndpointCounts:
    requests: int = 0
    issued: int = 0
    errors: int = 0
    injected_failures: int = 0


class Stats:
    def __init__(self) -> None:
        self.mailboxes: defaultdict[str, MailboxCounts] = defaultdict(MailboxCounts)
        self.endpoints: defaultdict[str, EndpointCounts] = defaultdict(EndpointCounts)
        self.notifications = NotificationCounts()
        self.lifecycle = LifecycleCounts()
        self.token_endpoint = TokenEndpointCounts()

    def clear(self) -> None:
        self.mailboxes.clear()
        self.endpoints.clear()
        self.notifications = NotificationCounts()
        self.lifecycle = LifecycleCounts()
        self.token_endpoint = TokenEndpointCounts()

    def lifecycle_event(self, mailbox: str, event: str, *, spontaneous: bool = False) -> None:
        for counts in (self.lifecycle, self.mailboxes[mailbox].lifecycle):
            setattr(counts, event, getattr(counts, event) + 1)
            counts.spontaneous += 1 if spontaneous else 0

    def notification(self, mailbox: str, outcome: str, count: int = 1) -> None:
        for counts in (self.notifications, self.mailboxes[mailbox].notifications):
            setattr(counts, outcome, getattr(counts, outcome) + count)

    def as_json(self, *, pending: int, in_flight: int) -> dict[str, Any]:
        return {
            "mailboxes": {k: dataclasses.asdict(v) for k, v in self.mailboxes.items()},
            "notifications": {**dataclasses.asdict(self.notifications), "pending": pending, "in_flight": in_flight},
            "lifecycle": dataclasses.asdict(self.lifecycle),
            "endpoints": {k: dataclasses.asdict(v) for k, v in self.endpoints.items()},
            "token_endpoint": dataclasses.asdict(self.token_endpoint),
        }

"""Change-notification subscriptions: the records, lazy expiry (on the sandbox clock), and which ones a
change concerns.

Each subscription remembers the expiry of the access token it was created, renewed or reauthorized
with (`token_expires_at`): Graph sends `reauthorizationRequired` as that token nears expiry
(lifecycle.py), and a subscription whose token has expired without being reauthorized gets no
notifications (they are lost, as Graph documents for an unanswered reauthorizationRequired).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from mailsync_sandbox.clock import Clock
from mailsync_sandbox.mailstore import Change
from mailsync_sandbox.timefmt import graph_time7

MAX_PER_MAILBOX = 1000


@dataclass
class Subscription:
    id: str
    resource: str
    user_id: str
    tenant_id: str
    folder_id: str | None  # None: the whole mailbox
    change_types: tuple[str, ...]
    notification_url: str
    lifecycle_url: str | None
    client_state: str | None
    expires_at: datetime
    application_id: str
    creator_id: str
    tls_version: str
    paused: bool = False  # reauthorizationRequired sent on request, not yet reauthorized: notifications are lost
    token_expires_at: float = float("inf")  # sandbox epoch expiry of the token it was (re)authorized with
    token_lifetime: float = 4500.0  # that token's whole lifetime (sandbox seconds)
    delegated: bool = True  # created with a user's token (a password reset removes it) or an app-only one
    next_reauth_at: float | None = None  # when the next spontaneous reauthorizationRequired is due
    reauth_sent: int = 0  # spontaneous reauthorizationRequired notifications since the last reauthorization

    def authorize_with(self, token_expires_at: float, token_lifetime: float) -> None:
        """Created, renewed or reauthorized with a token valid until `token_expires_at`."""
        self.token_expires_at = token_expires_at
        self.token_lifetime = max(1.0, token_lifetime)
        self.next_reauth_at = None
        self.reauth_sent = 0
        self.paused = False

    def token_lapsed(self, at: float) -> bool:
        return at >= self.token_expires_at

    def graph(self) -> dict[str, Any]:
        return {
            "id": self.id, "resource": self.resource, "applicationId": self.application_id,
            "changeType": ",".join(self.change_types), "clientState": self.client_state,
            "notificationUrl": self.notification_url, "notificationQueryOptions": None,
            "notificationContentType": "application/json",
            "lifecycleNotificationUrl": self.lifecycle_url, "expirationDateTime": graph_time7(self.expires_at),
            "creatorId": self.creator_id, "includeResourceData": False, "latestSupportedTlsVersion": self.tls_version,
            "encryptionCertificate": None, "encryptionCertificateId": None, "notificationUrlAppId": None,
        }

    def control(self) -> dict[str, Any]:
        token_expiry = (graph_time7(datetime.fromtimestamp(self.token_expires_at, UTC))
                        if self.token_expires_at != float("inf") else None)
        return {**self.graph(), "tenantId": self.tenant_id, "userId": self.user_id, "paused": self.paused,
                "delegated": self.delegated, "tokenExpirationDateTime": token_expiry,
                "reauthorizationsSent": self.reauth_sent}


def change_type_for(sub: Subscription, change: Change) -> str | None:
    """What a change looks like to one subscription, or None when it does not concern it."""
    if sub.folder_id is None:
        kind = {"created": "created", "updated": "updated", "moved": "updated", "deleted": "deleted"}[change.kind]
    elif change.kind == "moved":
        kind = ("deleted" if change.old_folder_id == sub.folder_id
                else "created" if change.new_folder_id == sub.folder_id else "")
    elif sub.folder_id in (change.old_folder_id, change.new_folder_id):
        kind = change.kind
    else:
        kind = ""
    return kind if kind and kind in sub.change_types else None


class SubscriptionStore:
    def __init__(self, clock: Clock | None = None) -> None:
        self._subs: dict[str, Subscription] = {}
        self._clock = clock or Clock()

    def clear(self) -> None:
        self._subs.clear()

    def add(self, sub: Subscription) -> None:
        self._subs[sub.id] = sub

    def remove(self, sub_id: str) -> Subscription | None:
        return self._subs.pop(sub_id, None)

    def get(self, sub_id: str) -> Subscription | None:
        """A live subscription; an expired one is removed on the way (lazily)."""
        sub = self._subs.get(sub_id)
        if sub is not None and sub.expires_at <= self._clock.now():
            del self._subs[sub_id]
            return None
        return sub

    def live(self) -> list[Subscription]:
        current = self._clock.now()
        for sub_id in [k for k, v in self._subs.items() if v.expires_at <= current]:
            del self._subs[sub_id]
        return list(self._subs.values())

    def for_user(self, user_id: str) -> list[Subscription]:
        return [s for s in self.live() if s.user_id == user_id]

    def count_for(self, user_id: str) -> int:
        return sum(1 for s in self.live() if s.user_id == user_id)

    def for_change(self, change: Change) -> list[tuple[Subscription, str]]:
        out = []
        for sub in self.live():
            if sub.user_id == change.user_id:
                kind = change_type_for(sub, change)
                if kind is not None:
                    out.append((sub, kind))
        return out

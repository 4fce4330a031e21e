"""Change-notification subscriptions: the records, lazy expiry, and which ones a change concerns."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from services.sandbox.mailstore import Change
from services.sandbox.timefmt import graph_time7, now

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
    paused: bool = False  # reauthorizationRequired sent, not yet reauthorized: notifications are lost

    def graph(self) -> dict[str, Any]:
        return {
            "id": self.id, "resource": self.resource, "applicationId": self.application_id,
            "changeType": ",".join(self.change_types), "clientState": self.client_state,
            "notificationUrl": self.notification_url, "notificationQueryOptions": None,
            "lifecycleNotificationUrl": self.lifecycle_url, "expirationDateTime": graph_time7(self.expires_at),
            "creatorId": self.creator_id, "includeResourceData": False, "latestSupportedTlsVersion": self.tls_version,
            "encryptionCertificate": None, "encryptionCertificateId": None, "notificationUrlAppId": None,
        }

    def control(self) -> dict[str, Any]:
        return {**self.graph(), "tenantId": self.tenant_id, "userId": self.user_id, "paused": self.paused}


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
    def __init__(self) -> None:
        self._subs: dict[str, Subscription] = {}

    def clear(self) -> None:
        self._subs.clear()

    def add(self, sub: Subscription) -> None:
        self._subs[sub.id] = sub

    def remove(self, sub_id: str) -> Subscription | None:
        return self._subs.pop(sub_id, None)

    def get(self, sub_id: str) -> Subscription | None:
        """A live subscription; an expired one is removed on the way (lazily)."""
        sub = self._subs.get(sub_id)
        if sub is not None and sub.expires_at <= now():
            del self._subs[sub_id]
            return None
        return sub

    def live(self) -> list[Subscription]:
        current = now()
        for sub_id in [k for k, v in self._subs.items() if v.expires_at <= current]:
            del self._subs[sub_id]
        return list(self._subs.values())

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

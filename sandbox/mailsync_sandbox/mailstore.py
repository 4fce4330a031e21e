"""Mailboxes and the changes made to them; every change is reported to listeners (subscriptions)."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from mailsync_sandbox.clock import Clock
from mailsync_sandbox.model import (
    OUTGOING,
    Address,
    Mailbox,
    Message,
    conversation_id_for,
    new_message_id,
    parse_address,
    parse_addresses,
)
from mailsync_sandbox.timefmt import parse_time


class InputError(ValueError):
    """A control-API body that cannot be used (answered 400)."""


@dataclass(frozen=True)
class Change:
    """One change to one message. `old_folder_id` is set for moves and deletions, `new_folder_id`
    for creations and moves (and updates in place, where both are equal)."""

    user_id: str
    message_id: str
    kind: str  # created | updated | moved | deleted
    old_folder_id: str | None
    new_folder_id: str | None
    etag: str


Listener = Callable[[Change], None]


def _text(body: dict[str, Any], key: str, default: str = "") -> str:
    value = body.get(key, default)
    if value is None:
        return default
    if not isinstance(value, str):
        raise InputError(f"{key} must be a string")
    return value


def _time(body: dict[str, Any], key: str, default: datetime) -> datetime:
    value = body.get(key)
    if value is None:
        return default
    try:
        return parse_time(str(value))
    except ValueError:
        raise InputError(f"{key} must be an ISO-8601 time") from None


class MailStore:
    """Times the store assigns (`receivedDateTime` when none is given, `lastModifiedDateTime`) come from
    the sandbox clock; a `received_at` given with an offset keeps it (timefmt.py)."""

    def __init__(self, clock: Clock | None = None) -> None:
        self.clock = clock or Clock()
        self.mailboxes: dict[str, Mailbox] = {}
        self._by_address: dict[str, str] = {}
        self._ids: dict[str, str] = {}  # lower-cased user id -> user id
        self.listeners: list[Listener] = []

    def clear(self) -> None:
        self.mailboxes.clear()
        self._by_address.clear()
        self._ids.clear()

    # --- mailboxes ------------------------------------------------------------------------

    def upsert_mailbox(self, body: dict[str, Any]) -> tuple[Mailbox, bool]:
        user_id = _text(body, "user_id").strip()
        address = _text(body, "address").strip()
        if not user_id or "/" in user_id or len(user_id) > 200:
            raise InputError("user_id must be a non-empty string without '/'")
        if "@" not in address:
            raise InputError("address must be an email address")
        aliases = body.get("aliases") or []
        if not isinstance(aliases, list) or not all(isinstance(a, str) and "@" in a for a in aliases):
            raise InputError("aliases must be a list of email addresses")
        for candidate in (address, *aliases):
            owner = self._by_address.get(candidate.lower())
            if owner is not None and owner != user_id:
                raise InputError(f"{candidate} already belongs to mailbox {owner}")
        tenant_id = _text(body, "tenant_id", "9188040d-6c67-4c5b-b112-36a304b66dad").strip()
        display_name = _text(body, "display_name") or address.split("@")[0]
        auto_consent = bool(body.get("auto_consent", False))
        existing = self.mailboxes.get(user_id)
        if existing is not None:
            for old in existing.addresses():
                self._by_address.pop(old.lower(), None)
            existing.tenant_id, existing.address, existing.aliases = tenant_id, address, list(aliases)
            existing.display_name, existing.auto_consent = display_name, auto_consent
            mailbox, created = existing, False
        else:
            mailbox = Mailbox(user_id=user_id, tenant_id=tenant_id, address=address, aliases=list(aliases),
                              display_name=display_name, auto_consent=auto_consent)
            self.mailboxes[user_id] = mailbox
            self._ids[user_id.lower()] = user_id
            created = True
        for candidate in mailbox.addresses():
            self._by_address[candidate.lower()] = user_id
        return mailbox, created

    def get(self, ref: str) -> Mailbox | None:
        """By user id, or by primary address / userPrincipalName (case-insensitive)."""
        found = self.mailboxes.get(ref)
        if found is not None:
            return found
        user_id = self._ids.get(ref.lower())
        if user_id is not None:
            return self.mailboxes[user_id]
        owner = self._by_address.get(ref.lower())
        mailbox = self.mailboxes.get(owner) if owner else None
        return mailbox if mailbox is not None and mailbox.address.lower() == ref.lower() else None

    def by_sign_in_name(self, name: str) -> Mailbox | None:
        """Sign-in accepts the primary address or an alias."""
        owner = self._by_address.get(name.strip().lower())
        return self.mailboxes.get(owner) if owner else None

    def tenants(self) -> set[str]:
        return {m.tenant_id.lower() for m in self.mailboxes.values()}

    # --- messages -------------------------------------------------------------------------

    def _emit(self, change: Change) -> None:
        for listener in list(self.listeners):
            listener(change)

    def deliver(self, mailbox: Mailbox, body: dict[str, Any]) -> Message:
        try:
            folder = mailbox.folder_for_delivery(_text(body, "folder", "inbox") or "inbox")
        except ValueError as exc:
            raise InputError(str(exc)) from None
        outgoing = folder.well_known in OUTGOING
        owner = Address(mailbox.display_name, mailbox.address)
        try:
            from_ = parse_address(body["from"]) if body.get("from") is not None else (owner if outgoing else None)
            sender = parse_address(body["sender"]) if body.get("sender") is not None else from_
            recipients = {key: parse_addresses(body.get(key), key) for key in ("to", "cc", "bcc", "reply_to")}
        except ValueError as exc:
            raise InputError(str(exc)) from None
        if from_ is None:
            raise InputError("from is required for incoming mail")
        received = _time(body, "received_at", self.clock.now())
        sent = _time(body, "sent_at", received)
        subject = _text(body, "subject")
        imid = _text(body, "internet_message_id") or f"<{uuid.uuid4()}@sandbox.local>"
        headers = body.get("headers") or []
        if isinstance(headers, dict):
            headers = [{"name": k, "value": v} for k, v in headers.items()]
        if not isinstance(headers, list) or not all(
                isinstance(h, dict) and isinstance(h.get("name"), str) and isinstance(h.get("value"), str)
                for h in headers):
            raise InputError("headers must be a list of {name, value} or an object")
        body_type = _text(body, "body_type", "text").lower()
        if body_type not in ("text", "html"):
            raise InputError("body_type must be text or html")
        is_draft = body.get("is_draft", folder.well_known == "drafts")
        seq = mailbox.next_seq()
        message = Message(
            id=new_message_id(), folder_id=folder.id, subject=subject, body=_text(body, "body"),
            body_type=body_type, from_=from_, sender=sender, to=recipients["to"], cc=recipients["cc"],
            bcc=recipients["bcc"], reply_to=recipients["reply_to"], received=received, sent=sent,
            created=received, modified=self.clock.now(), internet_message_id=imid,
            conversation_id=_text(body, "conversation_id") or conversation_id_for(mailbox.user_id, subject),
            is_draft=bool(is_draft), is_read=bool(body.get("is_read", outgoing)),
            extra_headers=[(h["name"], h["value"]) for h in headers], seq=seq, entered_seq=seq)
        mailbox.messages[message.id] = message
        mailbox.tombstones.get(folder.id, {}).pop(message.id, None)
        self._emit(Change(mailbox.user_id, message.id, "created", None, folder.id, message.etag))
        return message

    def move(self, mailbox: Mailbox, message: Message, folder_ref: str) -> Message:
        try:
            target = mailbox.folder_for_delivery(folder_ref)
        except ValueError as exc:
            raise InputError(str(exc)) from None
        if target.id == message.folder_id:
            return message
        seq = mailbox.next_seq()
        old = message.folder_id
        mailbox.tombstones.setdefault(old, {})[message.id] = seq
        mailbox.tombstones.get(target.id, {}).pop(message.id, None)
        message.folder_id, message.seq, message.entered_seq = target.id, seq, seq
        message.version += 1
        message.modified = self.clock.now()
        if target.well_known == "drafts":
            message.is_draft = True
        self._emit(Change(mailbox.user_id, message.id, "moved", old, target.id, message.etag))
        return message

    def update(self, mailbox: Mailbox, message: Message, body: dict[str, Any]) -> Message:
        if "subject" in body:
            message.subject = _text(body, "subject")
        if "is_read" in body:
            message.is_read = bool(body["is_read"])
        if "body" in body:
            message.body = _text(body, "body")
        message.seq = mailbox.next_seq()
        message.version += 1
        message.modified = self.clock.now()
        self._emit(Change(mailbox.user_id, message.id, "updated", message.folder_id, message.folder_id,
                          message.etag))
        return message

    def delete(self, mailbox: Mailbox, message: Message) -> None:
        seq = mailbox.next_seq()
        mailbox.tombstones.setdefault(message.folder_id, {})[message.id] = seq
        del mailbox.messages[message.id]
        self._emit(Change(mailbox.user_id, message.id, "deleted", message.folder_id, None, message.etag))

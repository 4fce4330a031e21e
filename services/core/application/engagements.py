"""Engagement persistence: one row per (account, internetMessageId), idempotent under redelivery."""

from __future__ import annotations

import base64
import binascii
import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import cached_property
from typing import Any, cast

import asyncpg

from services.core.adapters.kafka import Publisher
from services.core.adapters.store.engagement.decisions import DecisionRow, MatchDecisions, UnseenRow
from services.core.adapters.store.engagement.engagements import (
    ClientLink,
    ContactLink,
    Engagements,
    MailboxCopy,
    NewEngagement,
)
from services.core.adapters.store.outbox import Outbox
from services.core.application import outbox
from services.core.application.outbox import OutboxEntry
from services.core.domain import capture as tiers
from services.core.domain import events
from services.core.domain.capture import Capture
from services.core.domain.event_types import (
    UNSET,
    EngagementCreated,
    EngagementLinked,
    EngagementSource,
    Participant,
    to_value,
)
from services.core.domain.model import MailMessage, MatchResult


def engagement_id_for(account_id: str, internet_message_id: str) -> str:
    """Stable across redeliveries, mailboxes and replicas."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"mailsync:engagement:{account_id}:{internet_message_id}"))


def message_key(message: MailMessage) -> str:
    return message.internet_message_id or f"id:{message.message_id}"


def occurred_at(message: MailMessage) -> datetime:
    return message.sent_at or message.received_at or datetime.now(UTC)


def participants_json(result: MatchResult) -> list[dict[str, str]]:
    return [{"address": p.address, "name": p.name, "role": p.role.value} for p in result.participants]


@dataclass(frozen=True)
class Stored:
    engagement_id: str
    account_id: str
    created: bool  # this call inserted the engagement row
    # The engagement.created event of a row this call inserted, for the outbox (built from what the call wrote,
    # so nothing is read back); None when the row already existed: its event was queued when it was inserted.
    event: dict[str, Any] | None = None
    new_contacts: list[str] = field(default_factory=list)  # contacts this call linked to the engagement


@dataclass(frozen=True)
class Copy:
    """One mailbox's copy of an email, decided: what the store and the decision rows are written from."""

    account_id: str
    user_id: str
    connection_id: str
    message: MailMessage
    result: MatchResult
    source: str
    capture: Capture
    when: datetime  # occurred_at(message), computed once: the rows and the event carry the same instant
    mailbox_address: str | None = None  # this mailbox's own address
    # The directory's primary address of the user ('' without a users row): the event's mailbox address when
    # the mailbox's own is unknown. None: not loaded (the event is then rebuilt from the rows).
    directory_email: str | None = None

    @classmethod
    def of(cls, *, account_id: str, user_id: str, connection_id: str, message: MailMessage, result: MatchResult,
           source: str, capture: Capture, mailbox_address: str | None = None,
           directory_email: str | None = None) -> Copy:
        return cls(account_id, user_id, connection_id, message, result, source, capture, occurred_at(message),
                   mailbox_address, directory_email)

    @cached_property
    def engagement_id(self) -> str:
        return engagement_id_for(self.account_id, message_key(self.message))


def _decision_row(copy: Copy, engagement_id: str | None) -> DecisionRow:
    result, message = copy.result, copy.message
    addresses = sorted({p.address for p in result.participants})
    domains = sorted({a.rpartition("@")[2] for a in addresses})
    return DecisionRow(
        copy.user_id, message_key(message), copy.account_id, copy.connection_id, message.message_id,
        message.internet_message_id or None, result.decision.value,
        [{"code": r.code, "detail": r.detail} for r in result.reasons], message.folder, result.direction.value,
        participants_json(result), copy.when, engagement_id, copy.source,
        tiers.keep(copy.capture, message.subject, "").subject, message.conversation_id, addresses, domains)


async def record_decisions(conn: asyncpg.Connection, decided: Sequence[tuple[Copy, str | None]]) -> None:
    """Why each mailbox's copy is (not) an engagement, in one round trip; a copy decided twice in the list ends
    as the last one says (as one after the other would). The subject is kept only when the account's tier keeps
    subjects (re-matching rebuilds mail from this row; the body preview is never kept here)."""
    # In key order (a stable sort: a copy decided twice keeps its order), so two writers take row locks in the
    # same order and cannot deadlock.
    rows = sorted((_decision_row(copy, engagement_id) for copy, engagement_id in decided), key=lambda r: r[:2])
    await MatchDecisions(conn).record(rows)


@dataclass(frozen=True)
class Unseen:
    """A notified message that could not be fetched, and why."""

    account_id: str
    user_id: str
    connection_id: str
    message_id: str
    code: str
    detail: str
    source: str


async def record_unseen_many(conn: asyncpg.Connection | asyncpg.Pool, unseen: Sequence[Unseen]) -> None:
    """Notified messages that could not be fetched (deleted, moved away): keep why, in one round trip."""
    await MatchDecisions(conn).record_unseen([
        UnseenRow(u.user_id, f"id:{u.message_id}", u.account_id, u.connection_id, u.message_id,
                  [{"code": u.code, "detail": u.detail}], u.source) for u in unseen])


async def store_engagements(conn: asyncpg.Connection, copies: list[Copy]) -> list[Stored]:
    """Insert or extend the engagements of these matched copies, with one statement per table, and record
    their decisions; call inside a transaction. One row per (account, internetMessageId) whichever copy comes
    first (the unique key decides between concurrent writers); each row keeps exactly the fields of its
    account's capture tier (services.core.domain.capture). Returns one Stored per engagement, in the order first
    seen; each one this call inserted carries its engagement.created."""
    if not copies:
        return []
    store = Engagements(conn)
    groups: dict[str, list[Copy]] = {}
    for copy in copies:
        groups.setdefault(copy.engagement_id, []).append(copy)
    firsts = sorted(((eid, group[0]) for eid, group in groups.items()),
                    key=lambda item: (item[1].account_id, message_key(item[1].message)))
    kept = {eid: tiers.keep(c.capture, c.message.subject, c.message.preview) for eid, c in firsts}
    inserted = await store.insert_new([
        NewEngagement(eid, c.account_id, message_key(c.message), c.message.conversation_id, kept[eid].subject,
                      c.result.direction.value, c.when, json.dumps(participants_json(c.result)), c.source,
                      kept[eid].preview, c.capture.value) for eid, c in firsts])
    # One mailbox row per (engagement, user): a later copy updates it as a second upsert would.
    mailboxes: dict[tuple[str, str], tuple[Copy, str | None]] = {}
    for eid, group in groups.items():
        for copy in group:
            earlier = mailboxes.get((eid, copy.user_id))
            address = copy.mailbox_address if copy.mailbox_address is not None else (earlier[1] if earlier else None)
            mailboxes[(eid, copy.user_id)] = (copy, address)
    await store.upsert_mailboxes([
        MailboxCopy(eid, user_id, copy.connection_id, copy.message.message_id, copy.message.folder, address)
        for (eid, user_id), (copy, address) in sorted(mailboxes.items())])
    links: dict[tuple[str, str, str], datetime] = {}
    for eid, group in groups.items():
        for c in group:
            for contact in c.result.contact_ids:
                links.setdefault((eid, contact, c.account_id), c.when)  # the first insert stays
    added = await store.link_contacts([ContactLink(eid, contact, account, when)
                                       for (eid, contact, account), when in sorted(links.items())])
    await store.link_clients(sorted({ClientLink(eid, client, c.account_id) for eid, group in groups.items()
                                     for c in group for client in c.result.client_ids}))
    await record_decisions(conn, [(copy, copy.engagement_id) for copy in copies])
    sends = await store.link_sends(list(groups))
    new_contacts: dict[str, list[str]] = {}
    for eid, contact in sorted(added):
        new_contacts.setdefault(eid, []).append(contact)
    addresses: dict[str, dict[str, str | None]] = {}
    for (eid, user_id), (_, address) in mailboxes.items():
        addresses.setdefault(eid, {})[user_id] = address
    stored: list[Stored] = []
    for eid, group in groups.items():
        if eid in inserted:
            event = (_created_in_memory(eid, group, kept[eid], addresses[eid], sends.get(eid))
                     or await created_event(conn, eid))
            stored.append(Stored(eid, group[0].account_id, True, event, new_contacts.get(eid, [])))
        else:
            stored.append(Stored(eid, group[0].account_id, False, None, new_contacts.get(eid, [])))
    return stored


def _created_in_memory(engagement_id: str, group: list[Copy], kept: tiers.Kept,
                       addresses: dict[str, str | None], send_id: str | None) -> dict[str, Any] | None:
    """engagement.created of a row this transaction inserted: the same event created_event would rebuild
    from the rows at this point (every contributing copy is in ``group``). None when a mailbox's address
    would need the directory and it was not loaded."""
    first = group[0]
    users = sorted(addresses)
    shown: list[str] = []
    for user_id in users:
        own = addresses[user_id]
        directory = next((c.directory_email for c in group if c.user_id == user_id), None)
        if own is None and directory is None:
            return None
        shown.append(own if own is not None else directory or "")
    content = tiers.published_fields(first.capture, kept.subject, kept.preview)
    return to_value(EngagementCreated(
        engagement_id=engagement_id, account_id=first.account_id,
        contact_ids=sorted({c for copy in group for c in copy.result.contact_ids}),
        client_ids=sorted({c for copy in group for c in copy.result.client_ids}),
        direction=first.result.direction, subject=content.get("subject", UNSET),
        preview=content.get("preview", UNSET), occurred_at=first.when.astimezone(UTC).isoformat(),
        internet_message_id=message_key(first.message), conversation_id=first.message.conversation_id,
        participants=[Participant(address=p.address, name=p.name, role=p.role) for p in first.result.participants],
        mailbox_user_ids=users, mailbox_addresses=shown, source=cast(EngagementSource, first.source),
        send_id=send_id if send_id is not None else UNSET,  # sent through the API (services/core/domain/sends.py)
        event_id=events.stable_event_id("engagement.created", engagement_id)))


def _content(row: asyncpg.Record) -> dict[str, str]:
    """Exactly the content fields of the tier the row was stored (or last purged) under."""
    return tiers.published_fields(tiers.parse(row["capture"]), row["subject"], row["preview"])


async def created_event(db: asyncpg.Connection | asyncpg.Pool, engagement_id: str) -> dict[str, Any]:
    """The engagement.created event, rebuilt from the rows."""
    row = await Engagements(db).as_published(engagement_id)
    content = _content(row)
    return to_value(EngagementCreated(
        engagement_id=str(row["engagement_id"]), account_id=row["account_id"],
        contact_ids=list(row["contact_ids"]), client_ids=list(row["client_ids"]), direction=row["direction"],
        subject=content.get("subject", UNSET), preview=content.get("preview", UNSET),
        occurred_at=row["occurred_at"].isoformat(), internet_message_id=row["internet_message_id"],
        conversation_id=row["conversation_id"], participants=row["participants"],  # stored as published
        mailbox_user_ids=list(row["mailbox_user_ids"]), mailbox_addresses=list(row["mailbox_addresses"]),
        source=row["source"],
        send_id=str(row["send_id"]) if row["send_id"] is not None else UNSET,  # sent through the API
        event_id=events.stable_event_id("engagement.created", str(row["engagement_id"]))))


def created_entries(stored: Sequence[Stored]) -> list[OutboxEntry]:
    """engagement.created of the engagements a store inserted, for the outbox (keyed by account)."""
    return [outbox.entry_from_dict(events.ENGAGEMENTS, s.account_id, s.event) for s in stored if s.event is not None]


async def linked_entries(conn: asyncpg.Connection, engagement_ids: Sequence[str]) -> list[OutboxEntry]:
    """engagement.linked of these engagements, for the outbox: each carries its full, current contact list
    (read in the caller's transaction, after its change)."""
    return [outbox.entry(events.ENGAGEMENTS, linked.account_id, EngagementLinked(
        engagement_id=linked.engagement_id, account_id=linked.account_id, contact_ids=linked.contact_ids,
        event_id=events.stable_event_id("engagement.linked", linked.engagement_id, *linked.contact_ids)))
        for linked in await Engagements(conn).linked_contacts(engagement_ids)]


def encode_cursor(when: datetime, engagement_id: str) -> str:
    return base64.urlsafe_b64encode(f"{when.isoformat()}|{engagement_id}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        when, _, engagement_id = raw.partition("|")
        return datetime.fromisoformat(when), str(uuid.UUID(engagement_id))
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise ValueError("before is not a cursor this API returned") from None


async def contact_timeline(pool: asyncpg.Pool, contact_id: str, account_id: str | None, *, limit: int,
                           before: str | None) -> dict[str, Any] | None:
    """Newest first, keyset-paginated on (occurred_at, engagement_id), within `account_id` (None: any
    account, the operator). None when the contact is unknown there: neither in the directory nor on any
    engagement, so another account's contact looks exactly like one that does not exist."""
    if not await Engagements(pool).contact_known(contact_id, account_id):
        return None
    rows = await Engagements(pool).timeline(contact_id, account_id, limit=limit + 1,
                                            before=decode_cursor(before) if before else None)
    page = rows[:limit]
    items = [{
        "engagement_id": str(r["engagement_id"]), "occurred_at": r["occurred_at"].isoformat(),
        "direction": r["direction"], **_content(r), "participants": r["participants"],
        "internet_message_id": r["internet_message_id"], "conversation_id": r["conversation_id"],
        "mailbox_user_ids": list(r["mailbox_user_ids"]), "mailbox_addresses": list(r["mailbox_addresses"]),
        **({"send_id": str(r["send_id"])} if r["send_id"] is not None else {}),  # sent through the API
    } for r in page]
    next_before = encode_cursor(page[-1]["occurred_at"], str(page[-1]["engagement_id"])) if len(rows) > limit else None
    return {"engagements": items, "next_before": next_before}


async def publish_left_behind(pool: asyncpg.Pool, publisher: Publisher | None, *, older_than: timedelta,
                              limit: int = 500) -> int:
    """Until the release that drops engagements.published_at: engagements a pod of the previous release
    committed and left unannounced (its batch failed after the commit, or it stopped for the upgrade) move into
    the outbox with their stable event ids, then are published. Returns how many moved. This release announces
    its own through the outbox and never sets published_at."""
    async with pool.acquire() as conn, conn.transaction():
        store = Engagements(conn)
        left = await store.take_left_unannounced(older_than=older_than, limit=limit)
        created = [await created_event(conn, engagement_id) for engagement_id in left]
        ids = await Outbox(conn).add([outbox.entry_from_dict(events.ENGAGEMENTS, e["account_id"], e) for e in created])
        await store.mark_announced(left)
    await outbox.publish_now(pool, publisher, ids)
    return len(left)

"""Engagement persistence: one row per (account, internetMessageId), idempotent under redelivery."""

from __future__ import annotations

import base64
import binascii
import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cached_property
from typing import Any, cast

import asyncpg

from services.core import capture as tiers
from services.core import events
from services.core.capture import Capture
from services.core.domain import MailMessage, MatchResult
from services.core.event_types import UNSET, EngagementCreated, EngagementSource, Participant, to_value
from services.core.kafka import Publisher


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
    created: bool  # this call inserted the engagement row
    needs_publish: bool  # engagement.created not yet acknowledged by Kafka
    # The engagement.created event, built from what this call wrote when it inserted the row (so nothing is
    # read back); None when the row already existed: the publisher then rebuilds it from the rows.
    event: dict[str, Any] | None = None


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


_DECISION_SQL = """INSERT INTO match_decisions (user_id, message_key, account_id, connection_id, message_id,
                  internet_message_id, decision, reasons, folder, direction, participants, occurred_at,
                  engagement_id, source, subject, conversation_id, participant_addresses, participant_domains)
           VALUES ($1, $2, $3, $4::uuid, $5, $6, $7, $8, $9, $10, $11, $12, $13::uuid, $14, $15, $16, $17, $18)
           ON CONFLICT (user_id, message_key) DO UPDATE SET message_id = $5, decision = $7, reasons = $8,
                  folder = $9, direction = $10, participants = $11, occurred_at = $12,
                  engagement_id = coalesce($13::uuid, match_decisions.engagement_id), source = $14,
                  subject = $15, conversation_id = $16, participant_addresses = $17, participant_domains = $18,
                  decided_at = now()"""


def _decision_row(copy: Copy, engagement_id: str | None) -> tuple[Any, ...]:
    result, message = copy.result, copy.message
    addresses = sorted({p.address for p in result.participants})
    domains = sorted({a.rpartition("@")[2] for a in addresses})
    return (copy.user_id, message_key(message), copy.account_id, copy.connection_id, message.message_id,
            message.internet_message_id or None, result.decision.value,
            [{"code": r.code, "detail": r.detail} for r in result.reasons], message.folder,
            result.direction.value, participants_json(result), copy.when, engagement_id, copy.source,
            tiers.keep(copy.capture, message.subject, "").subject, message.conversation_id, addresses, domains)


async def record_decisions(conn: asyncpg.Connection, decided: list[tuple[Copy, str | None]]) -> None:
    """Why each mailbox's copy is (not) an engagement, in one round trip; a copy decided twice in the list ends
    as the last one says (as one after the other would). The subject is kept only when the account's tier keeps
    subjects (re-matching rebuilds mail from this row; the body preview is never kept here)."""
    # In key order (a stable sort: a copy decided twice keeps its order), so two writers take row locks in the
    # same order and cannot deadlock.
    rows = sorted((_decision_row(copy, engagement_id) for copy, engagement_id in decided), key=lambda r: r[:2])
    if rows:
        await conn.executemany(_DECISION_SQL, rows)


async def record_decision(
    conn: asyncpg.Connection, *, account_id: str, user_id: str, connection_id: str, message: MailMessage,
    result: MatchResult, source: str, engagement_id: str | None, capture: Capture,
) -> None:
    """One copy's decision (see record_decisions)."""
    await record_decisions(conn, [(Copy.of(account_id=account_id, user_id=user_id, connection_id=connection_id,
                                           message=message, result=result, source=source, capture=capture),
                                   engagement_id)])


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


_UNSEEN_SQL = """INSERT INTO match_decisions (user_id, message_key, account_id, connection_id, message_id,
                  decision, reasons, source)
           VALUES ($1, $2, $3, $4::uuid, $5, 'not_seen', $6, $7)
           ON CONFLICT (user_id, message_key) DO UPDATE SET reasons = $6, decided_at = now()"""


async def record_unseen_many(conn: asyncpg.Connection | asyncpg.Pool, unseen: list[Unseen]) -> None:
    """Notified messages that could not be fetched (deleted, moved away): keep why, in one round trip."""
    if unseen:
        await conn.executemany(_UNSEEN_SQL, [
            (u.user_id, f"id:{u.message_id}", u.account_id, u.connection_id, u.message_id,
             [{"code": u.code, "detail": u.detail}], u.source) for u in unseen])


async def record_unseen(
    conn: asyncpg.Connection | asyncpg.Pool, *, account_id: str, user_id: str, connection_id: str,
    message_id: str, code: str, detail: str, source: str,
) -> None:
    """A notified message that could not be fetched (deleted, moved away): keep why."""
    await record_unseen_many(conn, [Unseen(account_id, user_id, connection_id, message_id, code, detail, source)])


# Rows in key order, so two writers that share engagements (colleagues' copies in other partitions) take
# their row locks in the same order and cannot deadlock.
_INSERT_ENGAGEMENTS = """
    INSERT INTO engagements (engagement_id, account_id, internet_message_id, conversation_id, subject, direction,
                             occurred_at, participants, source, preview, capture)
    SELECT e, a, i, c, s, d, o, p::jsonb, src, pv, cap
      FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::timestamptz[],
                  $8::text[], $9::text[], $10::text[], $11::text[]) AS t(e, a, i, c, s, d, o, p, src, pv, cap)
    ON CONFLICT (account_id, internet_message_id) DO NOTHING RETURNING engagement_id"""
_MAILBOX_SQL = """INSERT INTO engagement_mailboxes (engagement_id, user_id, connection_id, message_id, folder,
                                             mailbox_address)
           VALUES ($1::uuid, $2, $3::uuid, $4, $5, $6)
           ON CONFLICT (engagement_id, user_id) DO UPDATE SET message_id = $4, folder = $5,
                  mailbox_address = coalesce($6, engagement_mailboxes.mailbox_address)"""
_CONTACT_SQL = """INSERT INTO engagement_contacts (engagement_id, contact_id, account_id, occurred_at)
           VALUES ($1::uuid, $2, $3, $4) ON CONFLICT DO NOTHING"""
_CLIENT_SQL = """INSERT INTO engagement_clients (engagement_id, client_id, account_id)
           VALUES ($1::uuid, $2, $3) ON CONFLICT DO NOTHING"""
# A message sent through the API carries its send: the send row (stored before Graph was called) holds the
# internetMessageId mailsync gave the message, unique, so whichever copy is stored first links it.
_LINK_SENDS = """UPDATE engagements e SET send_id = s.send_id FROM sends s
                  WHERE e.engagement_id = ANY($1::uuid[]) AND e.send_id IS NULL AND s.account_id = e.account_id
                    AND s.internet_message_id = e.internet_message_id RETURNING e.engagement_id, e.send_id"""


async def store_engagements(conn: asyncpg.Connection, copies: list[Copy]) -> list[Stored]:
    """Insert or extend the engagements of these matched copies, with one statement per table; call inside a
    transaction. One row per (account, internetMessageId) whichever copy comes first (the unique key decides
    between concurrent writers); each row keeps exactly the fields of its account's capture tier
    (services.core.capture). Returns one Stored per engagement, in the order first seen."""
    if not copies:
        return []
    groups: dict[str, list[Copy]] = {}
    for copy in copies:
        groups.setdefault(copy.engagement_id, []).append(copy)
    firsts = sorted(((eid, group[0]) for eid, group in groups.items()),
                    key=lambda item: (item[1].account_id, message_key(item[1].message)))
    kept = {eid: tiers.keep(c.capture, c.message.subject, c.message.preview) for eid, c in firsts}
    inserted = {str(r["engagement_id"]) for r in await conn.fetch(
        _INSERT_ENGAGEMENTS, [eid for eid, _ in firsts], [c.account_id for _, c in firsts],
        [message_key(c.message) for _, c in firsts], [c.message.conversation_id for _, c in firsts],
        [kept[eid].subject for eid, _ in firsts], [c.result.direction.value for _, c in firsts],
        [c.when for _, c in firsts], [json.dumps(participants_json(c.result)) for _, c in firsts],
        [c.source for _, c in firsts], [kept[eid].preview for eid, _ in firsts], [c.capture.value for _, c in firsts])}
    # One mailbox row per (engagement, user): a later copy updates it as a second upsert would.
    mailboxes: dict[tuple[str, str], tuple[Copy, str | None]] = {}
    for eid, group in groups.items():
        for copy in group:
            earlier = mailboxes.get((eid, copy.user_id))
            address = copy.mailbox_address if copy.mailbox_address is not None else (earlier[1] if earlier else None)
            mailboxes[(eid, copy.user_id)] = (copy, address)
    await conn.executemany(_MAILBOX_SQL, [
        (eid, user_id, copy.connection_id, copy.message.message_id, copy.message.folder, address)
        for (eid, user_id), (copy, address) in sorted(mailboxes.items())])
    links: dict[tuple[str, str, str], datetime] = {}
    for eid, group in groups.items():
        for c in group:
            for contact in c.result.contact_ids:
                links.setdefault((eid, contact, c.account_id), c.when)  # the first insert stays
    contacts = sorted(links.items())
    if contacts:
        await conn.executemany(_CONTACT_SQL, [(eid, contact, account, when)
                                              for (eid, contact, account), when in contacts])
    clients = sorted({(eid, client, c.account_id) for eid, group in groups.items() for c in group
                      for client in c.result.client_ids})
    if clients:
        await conn.executemany(_CLIENT_SQL, clients)
    await record_decisions(conn, [(copy, copy.engagement_id) for copy in copies])
    sends = {str(r["engagement_id"]): str(r["send_id"]) for r in await conn.fetch(_LINK_SENDS, list(groups))}
    existing = [eid for eid in groups if eid not in inserted]
    unpublished = {str(r["engagement_id"]) for r in await conn.fetch(
        "SELECT engagement_id FROM engagements WHERE engagement_id = ANY($1::uuid[]) AND published_at IS NULL",
        existing)} if existing else set()
    addresses: dict[str, dict[str, str | None]] = {}
    for (eid, user_id), (_, address) in mailboxes.items():
        addresses.setdefault(eid, {})[user_id] = address
    stored: list[Stored] = []
    for eid, group in groups.items():
        if eid in inserted:
            event = _created_in_memory(eid, group, kept[eid], addresses[eid], sends.get(eid))
            stored.append(Stored(eid, True, True, event))
        else:
            stored.append(Stored(eid, False, eid in unpublished))
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
        send_id=send_id if send_id is not None else UNSET,  # sent through the API (services/core/sends.py)
        event_id=events.stable_event_id("engagement.created", engagement_id)))


async def store_engagement(
    conn: asyncpg.Connection, *, account_id: str, user_id: str, connection_id: str, message: MailMessage,
    result: MatchResult, source: str, capture: Capture, mailbox_address: str | None = None,
) -> Stored:
    """Insert or extend one engagement (see store_engagements); call inside a transaction.
    ``mailbox_address`` is this mailbox's own address."""
    [stored] = await store_engagements(conn, [Copy.of(
        account_id=account_id, user_id=user_id, connection_id=connection_id, message=message, result=result,
        source=source, capture=capture, mailbox_address=mailbox_address)])
    return stored


# The mailboxes that contributed, in user_id order: mailbox_addresses[i] is mailbox_user_ids[i]'s address
# (the mailbox's own, or the directory's primary address for rows stored before it was recorded).
_MAILBOXES = """array(SELECT user_id FROM engagement_mailboxes m WHERE m.engagement_id = e.engagement_id
                            ORDER BY user_id) AS mailbox_user_ids,
                  array(SELECT coalesce(m.mailbox_address, u.email, '') FROM engagement_mailboxes m
                          LEFT JOIN users u ON u.user_id = m.user_id
                         WHERE m.engagement_id = e.engagement_id ORDER BY m.user_id) AS mailbox_addresses"""


_LINKS = """array(SELECT contact_id FROM engagement_contacts c WHERE c.engagement_id = e.engagement_id
                         ORDER BY contact_id) AS contact_ids,
              array(SELECT client_id FROM engagement_clients c WHERE c.engagement_id = e.engagement_id
                         ORDER BY client_id) AS client_ids"""
_CREATED = f"SELECT e.*, {_LINKS}, {_MAILBOXES} FROM engagements e WHERE e.engagement_id = $1::uuid"  # noqa: S608


def _content(row: asyncpg.Record) -> dict[str, str]:
    """Exactly the content fields of the tier the row was stored (or last purged) under."""
    return tiers.published_fields(tiers.parse(row["capture"]), row["subject"], row["preview"])


async def created_event(db: asyncpg.Connection | asyncpg.Pool, engagement_id: str) -> dict[str, Any]:
    """The engagement.created event, rebuilt from the rows (so a redelivery publishes the same thing)."""
    row = await db.fetchrow(_CREATED, engagement_id)
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


async def mark_published(db: asyncpg.Connection | asyncpg.Pool, engagement_ids: list[str]) -> None:
    await db.execute("UPDATE engagements SET published_at = now() WHERE engagement_id = ANY($1::uuid[])"
                     " AND published_at IS NULL", engagement_ids)


def encode_cursor(when: datetime, engagement_id: str) -> str:
    return base64.urlsafe_b64encode(f"{when.isoformat()}|{engagement_id}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        when, _, engagement_id = raw.partition("|")
        return datetime.fromisoformat(when), str(uuid.UUID(engagement_id))
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise ValueError("before is not a cursor this API returned") from None


_TIMELINE_COLUMNS = """e.engagement_id, e.occurred_at, e.direction, e.subject, e.preview, e.capture,
           e.participants, e.internet_message_id, e.conversation_id, e.send_id"""
_TIMELINE_FROM = """FROM engagement_contacts c JOIN engagements e ON e.engagement_id = c.engagement_id
                                                   AND e.account_id = c.account_id
     WHERE c.contact_id = $1 AND ($2::text IS NULL OR c.account_id = $2) {condition}
     ORDER BY c.occurred_at DESC, c.engagement_id DESC LIMIT $3"""
_TIMELINE = f"SELECT {_TIMELINE_COLUMNS}, {_MAILBOXES} {_TIMELINE_FROM}"


async def contact_timeline(pool: asyncpg.Pool, contact_id: str, account_id: str | None, *, limit: int,
                           before: str | None) -> dict[str, Any] | None:
    """Newest first, keyset-paginated on (occurred_at, engagement_id), within `account_id` (None: any
    account, the operator). None when the contact is unknown there: neither in the directory nor on any
    engagement, so another account's contact looks exactly like one that does not exist."""
    known = await pool.fetchval(
        """SELECT EXISTS (SELECT 1 FROM contacts WHERE contact_id = $1 AND ($2::text IS NULL OR account_id = $2))
               OR EXISTS (SELECT 1 FROM engagement_contacts WHERE contact_id = $1
                           AND ($2::text IS NULL OR account_id = $2))""", contact_id, account_id)
    if not known:
        return None
    args: list[Any] = [contact_id, account_id, limit + 1]
    condition = ""
    if before:
        when, engagement_id = decode_cursor(before)
        condition = "AND (c.occurred_at, c.engagement_id) < ($4, $5::uuid)"
        args += [when, engagement_id]
    rows = await pool.fetch(_TIMELINE.format(condition=condition), *args)
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


async def publish_left_behind(pool: asyncpg.Pool, publisher: Publisher, *, older_than: timedelta,
                              limit: int = 500) -> int:
    """The relay's pass: engagements committed but not announced for longer than any batch takes (the batch
    that stored them failed after its commit, and its record was dead-lettered or handled elsewhere) are
    published now, with the same stable event ids. Returns how many."""
    rows = await pool.fetch(
        "SELECT engagement_id FROM engagements WHERE published_at IS NULL AND created_at < now() - $1::interval"
        " ORDER BY created_at LIMIT $2", older_than, limit)
    ids = [str(r["engagement_id"]) for r in rows]
    if ids:
        await publish_created(pool, publisher, ids)
    return len(ids)


async def publish_created(pool: asyncpg.Pool, publisher: Publisher, engagement_ids: list[str], *,
                          known: Mapping[str, dict[str, Any]] | None = None) -> None:
    """Publish engagement.created (stable event ids), then mark them published. The events in ``known`` (built
    in memory by the transaction that inserted the row) are sent as they are; the others are rebuilt from the
    rows. A crash in between republishes the same events on redelivery: consumers dedupe by event_id."""
    records = []
    for engagement_id in engagement_ids:
        event = (known or {}).get(engagement_id) or await created_event(pool, engagement_id)
        records.append((event["account_id"], event))
    await publisher.publish_many(events.ENGAGEMENTS, records)
    await mark_published(pool, engagement_ids)

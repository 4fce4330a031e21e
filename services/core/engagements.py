"""Engagement persistence: one row per (account, internetMessageId), idempotent under redelivery."""

from __future__ import annotations

import base64
import binascii
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from services.core import capture as tiers
from services.core import events
from services.core.capture import Capture
from services.core.domain import MailMessage, MatchResult
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


async def record_decision(
    conn: asyncpg.Connection, *, account_id: str, user_id: str, connection_id: str, message: MailMessage,
    result: MatchResult, source: str, engagement_id: str | None, capture: Capture,
) -> None:
    """Why this mailbox's copy is (not) an engagement. The subject is kept only when the account's tier
    keeps subjects (re-matching rebuilds mail from this row; the body preview is never kept here)."""
    addresses = sorted({p.address for p in result.participants})
    domains = sorted({a.rpartition("@")[2] for a in addresses})
    await conn.execute(
        """INSERT INTO match_decisions (user_id, message_key, account_id, connection_id, message_id,
                  internet_message_id, decision, reasons, folder, direction, participants, occurred_at,
                  engagement_id, source, subject, conversation_id, participant_addresses, participant_domains)
           VALUES ($1, $2, $3, $4::uuid, $5, $6, $7, $8, $9, $10, $11, $12, $13::uuid, $14, $15, $16, $17, $18)
           ON CONFLICT (user_id, message_key) DO UPDATE SET message_id = $5, decision = $7, reasons = $8,
                  folder = $9, direction = $10, participants = $11, occurred_at = $12,
                  engagement_id = coalesce($13::uuid, match_decisions.engagement_id), source = $14,
                  subject = $15, conversation_id = $16, participant_addresses = $17, participant_domains = $18,
                  decided_at = now()""",
        user_id, message_key(message), account_id, connection_id, message.message_id,
        message.internet_message_id or None, result.decision.value,
        [{"code": r.code, "detail": r.detail} for r in result.reasons], message.folder,
        result.direction.value, participants_json(result), occurred_at(message), engagement_id, source,
        tiers.keep(capture, message.subject, "").subject, message.conversation_id, addresses, domains)


async def record_unseen(
    conn: asyncpg.Connection | asyncpg.Pool, *, account_id: str, user_id: str, connection_id: str,
    message_id: str, code: str, detail: str, source: str,
) -> None:
    """A notified message that could not be fetched (deleted, moved away): keep why."""
    await conn.execute(
        """INSERT INTO match_decisions (user_id, message_key, account_id, connection_id, message_id,
                  decision, reasons, source)
           VALUES ($1, $2, $3, $4::uuid, $5, 'not_seen', $6, $7)
           ON CONFLICT (user_id, message_key) DO UPDATE SET reasons = $6, decided_at = now()""",
        user_id, f"id:{message_id}", account_id, connection_id, message_id,
        [{"code": code, "detail": detail}], source)


async def store_engagement(
    conn: asyncpg.Connection, *, account_id: str, user_id: str, connection_id: str, message: MailMessage,
    result: MatchResult, source: str, capture: Capture, mailbox_address: str | None = None,
) -> Stored:
    """Insert or extend the engagement; call inside a transaction. The row keeps exactly the fields of the
    account's capture tier (services.core.capture); ``mailbox_address`` is this mailbox's own address."""
    engagement_id = engagement_id_for(account_id, message_key(message))
    when = occurred_at(message)
    kept = tiers.keep(capture, message.subject, message.preview)
    inserted = await conn.fetchval(
        """INSERT INTO engagements (engagement_id, account_id, internet_message_id, conversation_id, subject,
                                    direction, occurred_at, participants, source, preview, capture)
           VALUES ($1::uuid, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
           ON CONFLICT (account_id, internet_message_id) DO NOTHING RETURNING true""",
        engagement_id, account_id, message_key(message), message.conversation_id, kept.subject,
        result.direction.value, when, participants_json(result), source, kept.preview, capture.value)
    await conn.execute(
        """INSERT INTO engagement_mailboxes (engagement_id, user_id, connection_id, message_id, folder,
                                             mailbox_address)
           VALUES ($1::uuid, $2, $3::uuid, $4, $5, $6)
           ON CONFLICT (engagement_id, user_id) DO UPDATE SET message_id = $4, folder = $5,
                  mailbox_address = coalesce($6, engagement_mailboxes.mailbox_address)""",
        engagement_id, user_id, connection_id, message.message_id, message.folder, mailbox_address)
    await conn.executemany(
        """INSERT INTO engagement_contacts (engagement_id, contact_id, account_id, occurred_at)
           VALUES ($1::uuid, $2, $3, $4) ON CONFLICT DO NOTHING""",
        [(engagement_id, c, account_id, when) for c in result.contact_ids])
    await conn.executemany(
        """INSERT INTO engagement_clients (engagement_id, client_id, account_id)
           VALUES ($1::uuid, $2, $3) ON CONFLICT DO NOTHING""",
        [(engagement_id, c, account_id) for c in result.client_ids])
    await record_decision(conn, account_id=account_id, user_id=user_id, connection_id=connection_id,
                          message=message, result=result, source=source, engagement_id=engagement_id,
                          capture=capture)
    await link_send(conn, engagement_id)
    unpublished = await conn.fetchval(
        "SELECT published_at IS NULL FROM engagements WHERE engagement_id = $1::uuid", engagement_id)
    return Stored(engagement_id, bool(inserted), bool(unpublished))


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
    event = events.envelope("engagement.created", {
        "engagement_id": str(row["engagement_id"]), "account_id": row["account_id"],
        "contact_ids": list(row["contact_ids"]), "client_ids": list(row["client_ids"]),
        "direction": row["direction"], **_content(row),
        "occurred_at": row["occurred_at"].isoformat(), "internet_message_id": row["internet_message_id"],
        "conversation_id": row["conversation_id"], "participants": row["participants"],
        "mailbox_user_ids": list(row["mailbox_user_ids"]), "mailbox_addresses": list(row["mailbox_addresses"]),
        "source": row["source"],
    }, event_id=events.stable_event_id("engagement.created", str(row["engagement_id"])))
    if row["send_id"] is not None:
        event["send_id"] = str(row["send_id"])  # sent through the API (services/core/sends.py)
    return event


async def link_send(conn: asyncpg.Connection, engagement_id: str) -> None:
    """A message sent through the API carries its send: the send row (stored before Graph was called) holds
    the internetMessageId mailsync gave the message, unique, so whichever copy is stored first links it."""
    await conn.execute(
        "UPDATE engagements e SET send_id = s.send_id FROM sends s WHERE e.engagement_id = $1::uuid"
        " AND e.send_id IS NULL AND s.account_id = e.account_id AND s.internet_message_id = e.internet_message_id",
        engagement_id)


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


async def publish_created(pool: asyncpg.Pool, publisher: Publisher, engagement_ids: list[str]) -> None:
    """Publish engagement.created (stable event ids), then mark them published. A crash in between
    republishes the same events on redelivery: consumers dedupe by event_id."""
    records = []
    for engagement_id in engagement_ids:
        event = await created_event(pool, engagement_id)
        records.append((event["account_id"], event))
    await publisher.publish_many(events.ENGAGEMENTS, records)
    await mark_published(pool, engagement_ids)

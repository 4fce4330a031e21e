"""engagements, engagement_mailboxes, engagement_contacts and engagement_clients: the feed the matcher writes
(services/core/application/engagements.py decides what goes in them) and the timeline the API reads."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any, NamedTuple

import asyncpg

from services.core.adapters.store.base import Repository


class NewEngagement(NamedTuple):
    engagement_id: str
    account_id: str
    internet_message_id: str
    conversation_id: str
    subject: str | None
    direction: str
    occurred_at: datetime
    participants: str  # JSON, as published
    source: str
    preview: str | None
    capture: str


class MailboxCopy(NamedTuple):
    engagement_id: str
    user_id: str
    connection_id: str
    message_id: str
    folder: str
    mailbox_address: str | None  # None keeps the address already recorded


class ContactLink(NamedTuple):
    engagement_id: str
    contact_id: str
    account_id: str
    occurred_at: datetime


class ClientLink(NamedTuple):
    engagement_id: str
    client_id: str
    account_id: str


class LinkedContacts(NamedTuple):
    engagement_id: str
    account_id: str
    contact_ids: list[str]


# Every statement takes its rows in key order (the callers sort them), so two writers that share engagements
# (colleagues' copies in other partitions) take their row locks in the same order and cannot deadlock.
_INSERT = """
    INSERT INTO engagements (engagement_id, account_id, internet_message_id, conversation_id, subject, direction,
                             occurred_at, participants, source, preview, capture)
    SELECT e, a, i, c, s, d, o, p::jsonb, src, pv, cap
      FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::timestamptz[],
                  $8::text[], $9::text[], $10::text[], $11::text[]) AS t(e, a, i, c, s, d, o, p, src, pv, cap)
    ON CONFLICT (account_id, internet_message_id) DO NOTHING RETURNING engagement_id"""
_MAILBOX = """INSERT INTO engagement_mailboxes (engagement_id, user_id, connection_id, message_id, folder,
                                             mailbox_address)
           VALUES ($1::uuid, $2, $3::uuid, $4, $5, $6)
           ON CONFLICT (engagement_id, user_id) DO UPDATE SET message_id = $4, folder = $5,
                  mailbox_address = coalesce($6, engagement_mailboxes.mailbox_address)"""
_CONTACTS = """INSERT INTO engagement_contacts (engagement_id, contact_id, account_id, occurred_at)
           SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::timestamptz[])
           ON CONFLICT DO NOTHING RETURNING engagement_id, contact_id"""
_CLIENT = """INSERT INTO engagement_clients (engagement_id, client_id, account_id)
           VALUES ($1::uuid, $2, $3) ON CONFLICT DO NOTHING"""
# A message sent through the API carries its send: the send row (stored before Graph was called) holds the
# internetMessageId mailsync gave the message, unique, so whichever copy is stored first links it.
_LINK_SENDS = """UPDATE engagements e SET send_id = s.send_id FROM sends s
                  WHERE e.engagement_id = ANY($1::uuid[]) AND e.send_id IS NULL AND s.account_id = e.account_id
                    AND s.internet_message_id = e.internet_message_id RETURNING e.engagement_id, e.send_id"""

# The mailboxes that contributed, in user_id order: mailbox_addresses[i] is mailbox_user_ids[i]'s address
# (the mailbox's own, or the directory's primary address for rows stored before it was recorded).
_MAILBOXES = """array(SELECT user_id FROM engagement_mailboxes m WHERE m.engagement_id = e.engagement_id
                            ORDER BY user_id) AS mailbox_user_ids,
                  array(SELECT coalesce(m.mailbox_address, u.email, '') FROM engagement_mailboxes m
                          LEFT JOIN users u ON u.user_id = m.user_id
                         WHERE m.engagement_id = e.engagement_id ORDER BY m.user_id) AS mailbox_addresses"""
_CONTACT_IDS = """array(SELECT contact_id FROM engagement_contacts c WHERE c.engagement_id = e.engagement_id
                         ORDER BY contact_id) AS contact_ids"""
_LINKS = f"""{_CONTACT_IDS},
              array(SELECT client_id FROM engagement_clients c WHERE c.engagement_id = e.engagement_id
                         ORDER BY client_id) AS client_ids"""  # noqa: S608
_CREATED = f"SELECT e.*, {_LINKS}, {_MAILBOXES} FROM engagements e WHERE e.engagement_id = $1::uuid"  # noqa: S608
_TIMELINE = f"""
    SELECT e.engagement_id, e.occurred_at, e.direction, e.subject, e.preview, e.capture, e.participants,
           e.internet_message_id, e.conversation_id, e.send_id, {_MAILBOXES}
      FROM engagement_contacts c JOIN engagements e ON e.engagement_id = c.engagement_id
                                                   AND e.account_id = c.account_id
     WHERE c.contact_id = $1 AND ($2::text IS NULL OR c.account_id = $2) {{condition}}
     ORDER BY c.occurred_at DESC, c.engagement_id DESC LIMIT $3"""  # noqa: S608


class Engagements(Repository):
    async def insert_new(self, rows: Sequence[NewEngagement]) -> set[str]:
        """One row per (account, internetMessageId), whichever writer comes first; returns the ids this
        statement inserted."""
        if not rows:
            return set()
        columns: list[list[Any]] = [list(column) for column in zip(*rows, strict=True)]
        return {str(r["engagement_id"]) for r in await self._db.fetch(_INSERT, *columns)}

    async def upsert_mailboxes(self, rows: Sequence[MailboxCopy]) -> None:
        if rows:
            await self._db.executemany(_MAILBOX, rows)

    async def link_contacts(self, rows: Sequence[ContactLink]) -> list[tuple[str, str]]:
        """The (engagement_id, contact_id) links this statement added (a link already there stays as it was)."""
        if not rows:
            return []
        columns: list[list[Any]] = [list(column) for column in zip(*rows, strict=True)]
        return [(str(r["engagement_id"]), r["contact_id"]) for r in await self._db.fetch(_CONTACTS, *columns)]

    async def link_clients(self, rows: Sequence[ClientLink]) -> None:
        if rows:
            await self._db.executemany(_CLIENT, rows)

    async def link_sends(self, engagement_ids: Sequence[str]) -> dict[str, str]:
        """send_id by engagement id, for the engagements this statement linked to the send they came from."""
        return {str(r["engagement_id"]): str(r["send_id"])
                for r in await self._db.fetch(_LINK_SENDS, list(engagement_ids))}

    async def as_published(self, engagement_id: str) -> asyncpg.Record:
        """The engagement with its contacts, clients and mailboxes: what engagement.created is built from."""
        row: asyncpg.Record = await self._db.fetchrow(_CREATED, engagement_id)
        return row

    async def unlink_contact(self, contact_id: str, account_id: str) -> list[str]:
        """The engagements the (deleted) contact was linked to, one id per link removed."""
        rows = await self._db.fetch(
            "DELETE FROM engagement_contacts WHERE contact_id = $1 AND account_id = $2 RETURNING engagement_id",
            contact_id, account_id)
        return [str(r["engagement_id"]) for r in rows]

    async def linked_contacts(self, engagement_ids: Sequence[str]) -> list[LinkedContacts]:
        """Each engagement's full, current contact list, in the order of `engagement_ids`."""
        rows = await self._db.fetch(
            f"SELECT e.engagement_id, e.account_id, {_CONTACT_IDS} FROM engagements e"  # noqa: S608
            " WHERE e.engagement_id = ANY($1::uuid[])", list(engagement_ids))
        found = {str(r["engagement_id"]): LinkedContacts(str(r["engagement_id"]), r["account_id"],
                                                         list(r["contact_ids"])) for r in rows}
        return [found[e] for e in engagement_ids if e in found]

    async def take_left_unannounced(self, *, older_than: timedelta, limit: int) -> list[str]:
        """Inside the caller's transaction: engagements a pod of the release before the outbox committed and never
        announced (taken by migration 0017), oldest first, locked."""
        rows = await self._db.fetch(
            """SELECT l.engagement_id FROM legacy_unannounced_engagements l JOIN engagements e USING (engagement_id)
                WHERE e.created_at < now() - $1::interval
                ORDER BY e.created_at LIMIT $2 FOR UPDATE OF l SKIP LOCKED""", older_than, limit)
        return [str(r["engagement_id"]) for r in rows]

    async def mark_announced(self, engagement_ids: Sequence[str]) -> None:
        if engagement_ids:
            await self._db.execute("DELETE FROM legacy_unannounced_engagements"
                                   " WHERE engagement_id = ANY($1::uuid[])", list(engagement_ids))

    async def contact_known(self, contact_id: str, account_id: str | None) -> bool:
        """In the directory or on an engagement, within the account (any account for None)."""
        return bool(await self._db.fetchval(
            """SELECT EXISTS (SELECT 1 FROM contacts WHERE contact_id = $1 AND ($2::text IS NULL OR account_id = $2))
                   OR EXISTS (SELECT 1 FROM engagement_contacts WHERE contact_id = $1
                               AND ($2::text IS NULL OR account_id = $2))""", contact_id, account_id))

    async def timeline(self, contact_id: str, account_id: str | None, *, limit: int,
                       before: tuple[datetime, str] | None) -> list[asyncpg.Record]:
        """The contact's engagements newest first, keyset-paginated on (occurred_at, engagement_id) strictly
        before `before`; up to `limit` rows."""
        args: list[Any] = [contact_id, account_id, limit]
        condition = ""
        if before is not None:
            condition = "AND (c.occurred_at, c.engagement_id) < ($4, $5::uuid)"
            args += list(before)
        rows: list[asyncpg.Record] = await self._db.fetch(_TIMELINE.format(condition=condition), *args)
        return rows

"""Late contacts: when the directory learns an address, alias or domain, recent mail that mentioned
it is decided again; new engagements are created and new contact links published."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import asyncpg
from prometheus_client import Counter

from services.core.adapters.kafka import Publisher
from services.core.adapters.store.engagement.decisions import MatchDecisions, Position
from services.core.adapters.store.engagement.engagements import Engagements
from services.core.adapters.store.mailbox.owners import MailboxOwners
from services.core.adapters.store.outbox import Outbox
from services.core.application import engagements, outbox
from services.core.application.matching import Decided, Previous, ToDecide, decide_and_store, owner_of
from services.core.domain.model import EmailAddress, MailMessage
from services.matcher.directory import DirectoryChange

log = logging.getLogger(__name__)

REMATCH_PAGE = 500
REMATCHED = Counter("mailsync_rematch_total", "Re-matching outcomes", ["outcome"])


def rebuild_message(row: asyncpg.Record) -> MailMessage:
    """The decision row holds every participant with its role: enough to decide again. It holds the subject
    only when the account's tier kept it, and never the body preview: mail that becomes an engagement through
    a late contact carries no preview (previews are read only for mail that matches when it arrives)."""
    by_role: dict[str, list[EmailAddress]] = {}
    for p in row["participants"]:
        by_role.setdefault(p["role"], []).append(EmailAddress(p["address"], p.get("name", "")))

    def first(role: str) -> EmailAddress | None:
        return by_role[role][0] if by_role.get(role) else None

    return MailMessage(
        message_id=row["message_id"], internet_message_id=row["internet_message_id"] or "",
        conversation_id=row["conversation_id"], subject=row["subject"] or "", folder=row["folder"] or "other",
        is_draft=False, received_at=row["occurred_at"], sent_at=row["occurred_at"], from_=first("from"),
        sender=first("sender"), to=tuple(by_role.get("to", ())), cc=tuple(by_role.get("cc", ())),
        bcc=tuple(by_role.get("bcc", ())), reply_to=tuple(by_role.get("reply_to", ())))


class Rematcher:
    def __init__(self, pool: asyncpg.Pool, publisher: Publisher, *, window: timedelta) -> None:
        self._pool = pool
        self._publisher = publisher
        self._window = window

    async def apply(self, change: DirectoryChange) -> None:
        if change.deleted_contact:
            await self._unlink(change.account_id, change.deleted_contact)
        if change.addresses or change.domains:
            await self._rematch(change)

    async def _rematch(self, change: DirectoryChange) -> None:
        created: set[str] = set()
        linked: set[str] = set()
        async for row in self._candidates(change):
            decided = await self._decide_again(row)
            # At once: an event of this account left unpublished would hold back the live path's next ones
            # (one account's events leave in order).
            await outbox.publish_now(self._pool, self._publisher, decided.outbox_ids)
            created.update(s.engagement_id for s in decided.stored if s.created)
            linked.update(s.engagement_id for s in decided.stored if not s.created and s.new_contacts)
        if created:
            REMATCHED.labels("created").inc(len(created))
        if linked:
            REMATCHED.labels("linked").inc(len(linked - created))

    async def _candidates(self, change: DirectoryChange) -> AsyncIterator[asyncpg.Record]:
        """The window's decisions that mention the change, a bounded page at a time (keyset order), so a
        directory record about a busy domain never loads 90 days of mail into memory at once."""
        after = Position(datetime.min.replace(tzinfo=UTC), "", "")
        decisions = MatchDecisions(self._pool)
        while True:
            rows = await decisions.mentioning(change.account_id, window=self._window,
                                              addresses=sorted(change.addresses), domains=sorted(change.domains),
                                              after=after, limit=REMATCH_PAGE)
            for row in rows:
                yield row
            if len(rows) < REMATCH_PAGE:
                return
            last = rows[-1]
            after = Position(last["occurred_at"], last["user_id"], last["message_key"])

    async def _decide_again(self, row: asyncpg.Record) -> Decided:
        """One stored copy decided again on the directory as it is now: an engagement (source rematch) when it
        matches, its decision row rewritten when that changed; engagement.created or engagement.linked queued."""
        connection = await MailboxOwners(self._pool).addresses_of(row["connection_id"])
        owner, policy = await owner_of(self._pool, row["account_id"], row["user_id"],
                                       tuple(connection["mailbox_addresses"]) if connection else ())
        # Headers were read (and automated mail excluded) when the mail arrived; excluded decisions are never
        # re-matched, so the rebuilt message needs no header verdict.
        item = ToDecide(owner, policy, str(row["connection_id"]), rebuild_message(row), "rematch",
                        mailbox_address=connection["mailbox_address"] if connection else None,
                        previous=Previous(row["decision"], row["source"]))
        return await decide_and_store(self._pool, [item], announce_links=True)

    async def _unlink(self, account_id: str, contact_id: str) -> None:
        """A deleted contact leaves its engagements; each one's engagement.linked carries what is left."""
        async with self._pool.acquire() as conn, conn.transaction():
            unlinked = await Engagements(conn).unlink_contact(contact_id, account_id)
            ids = await Outbox(conn).add(await engagements.linked_entries(conn, sorted(set(unlinked))))
        await outbox.publish_now(self._pool, self._publisher, ids)
        if unlinked:
            REMATCHED.labels("unlinked").inc(len(unlinked))

"""Decide and store: owner → directory snapshot → decision → engagement, decision rows and outbox, the one
implementation behind the live path (services/matcher/consumer.py), re-matching (services/matcher/rematch.py)
and diagnose (services/core/application/diagnose.py, a dry run that stores nothing)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import asyncpg

from services.core.adapters.store.outbox import Outbox
from services.core.application import engagements
from services.core.application.directory_lookup import load_snapshot, owner_addresses
from services.core.application.engagements import Copy, Stored, Unseen
from services.core.application.mail_policy import MailPolicy, load_policy
from services.core.domain.addresses import domain_of
from services.core.domain.matching import addresses_to_look_up, decide
from services.core.domain.model import Decision, DirectorySnapshot, MailboxOwner, MailMessage


@dataclass(frozen=True)
class Previous:
    """The decision already stored for a copy that is decided again (re-matching)."""

    decision: str
    source: str


@dataclass(frozen=True)
class ToDecide:
    """One mailbox's copy of an email, with what deciding it needs."""

    owner: MailboxOwner
    policy: MailPolicy
    connection_id: str
    message: MailMessage
    source: str  # the source an engagement (and its decision row) is recorded under
    mailbox_address: str | None = None  # this mailbox's own address
    directory_email: str | None = None  # see Copy.directory_email
    # A stored copy decided again: a decision that is not an engagement is rewritten only when it changed, under
    # the source it came from.
    previous: Previous | None = None


@dataclass(frozen=True)
class Decided:
    copies: list[Copy]  # one per item, in order
    stored: list[Stored] = field(default_factory=list)  # the engagements written, in the order first seen
    outbox_ids: list[int] = field(default_factory=list)  # to publish after the commit (outbox.publish_now)


async def owner_of(db: asyncpg.Pool | asyncpg.Connection, account_id: str, user_id: str,
                   mailbox_addresses: Sequence[str]) -> tuple[MailboxOwner, MailPolicy]:
    """One mailbox owner and the policy of their mail, read on their own (the live path reads a batch's at
    once: services/matcher/handler.load_mailboxes)."""
    policy = await load_policy(db, account_id, user_id)
    addresses = await owner_addresses(db, user_id, tuple(mailbox_addresses))
    return MailboxOwner(user_id, account_id, addresses, never_log=policy.never_log), policy


def narrowed(snapshot: DirectorySnapshot, addresses: frozenset[str]) -> DirectorySnapshot:
    """What a snapshot loaded for just ``addresses`` would hold. The union snapshot is keyed by the
    directory's normalised addresses and domains, so keeping the keys a message would have asked for gives
    the same snapshot, and ``decide`` works on a handful of entries instead of the whole batch's."""
    domains = frozenset(domain_of(a) for a in addresses)
    contacts, clients = snapshot.contacts_by_address, snapshot.clients_by_domain
    return replace(
        snapshot,
        contacts_by_address={a: contacts[a] for a in addresses if a in contacts},
        colleague_addresses=addresses & snapshot.colleague_addresses,
        clients_by_domain={d: clients[d] for d in domains if d in clients},
        blocked_addresses=addresses & snapshot.blocked_addresses,
        blocked_domains=domains & snapshot.blocked_domains,
    )


async def decide_all(db: asyncpg.Pool | asyncpg.Connection, items: Sequence[ToDecide]) -> list[Copy]:
    """Each copy decided on its part of its account's snapshot: one directory read per account for the union
    of the items' addresses, the same decision a snapshot of the copy's own addresses gives."""
    wanted = [addresses_to_look_up(item.message, item.owner) for item in items]
    by_account: dict[str, set[str]] = {}
    for item, mine in zip(items, wanted, strict=True):
        by_account.setdefault(item.owner.account_id, set()).update(mine)
    snapshots = {account: await load_snapshot(db, account, frozenset(union))
                 for account, union in sorted(by_account.items())}
    copies: list[Copy] = []
    for item, mine in zip(items, wanted, strict=True):
        owner, policy = item.owner, item.policy
        snapshot = narrowed(snapshots[owner.account_id], mine)
        result = decide(item.message, owner, replace(snapshot, exclude_automated=policy.exclude_automated))
        copies.append(Copy.of(account_id=owner.account_id, user_id=owner.user_id, connection_id=item.connection_id,
                              message=item.message, result=result, source=item.source, capture=policy.capture,
                              mailbox_address=item.mailbox_address, directory_email=item.directory_email))
    return copies


async def decide_and_store(pool: asyncpg.Pool, items: Sequence[ToDecide], *, unseen: Sequence[Unseen] = (),
                           announce_links: bool = False, dry_run: bool = False) -> Decided:
    """Decide the copies, then (unless ``dry_run``) store them in one transaction: the engagements of the
    matched ones, every decision row, the ``unseen`` messages' rows, and in the same transaction one outbox
    insert with engagement.created of each engagement inserted (and, with ``announce_links``, engagement.linked
    of each existing one that gained contacts). Publish ``outbox_ids`` after this returns."""
    async with pool.acquire() as conn:
        copies = await decide_all(conn, items)
        if dry_run:
            return Decided(copies)
        async with conn.transaction():
            return await _store(conn, items, copies, unseen, announce_links=announce_links)


async def _store(conn: asyncpg.Connection, items: Sequence[ToDecide], copies: list[Copy], unseen: Sequence[Unseen],
                 *, announce_links: bool) -> Decided:
    stored = await engagements.store_engagements(conn, [c for c in copies if c.result.decision is Decision.MATCHED])
    await engagements.record_decisions(conn, [(copy, None) for copy in decisions_to_rewrite(items, copies)])
    await engagements.record_unseen_many(conn, unseen)
    entries = engagements.created_entries(stored)
    if announce_links:
        entries += await engagements.linked_entries(conn, gained_contacts(stored))
    ids = await Outbox(conn).add(entries)
    return Decided(copies, stored, ids)


def decisions_to_rewrite(items: Sequence[ToDecide], copies: Sequence[Copy]) -> list[Copy]:
    """The copies decided not to be engagements whose decision row is (re)written: every one decided for the
    first time; one decided again only when its decision changed, under the source it came from. (A matched
    copy's row is written with its engagement.)"""
    rewrite: list[Copy] = []
    for item, copy in zip(items, copies, strict=True):
        if copy.result.decision is Decision.MATCHED:
            continue
        if item.previous is None:
            rewrite.append(copy)
        elif item.previous.decision != copy.result.decision.value:
            rewrite.append(replace(copy, source=item.previous.source))
    return rewrite


def gained_contacts(stored: Sequence[Stored]) -> list[str]:
    """Engagements that existed before and gained contacts: each is announced by engagement.linked (a new one
    is announced by its engagement.created, which already lists them)."""
    return sorted({s.engagement_id for s in stored if not s.created and s.new_contacts})

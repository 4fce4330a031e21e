"""Loads what the directory knows about one message's participants: a handful of indexed queries."""

from __future__ import annotations

from collections import defaultdict

import asyncpg

from services.core.addresses import domain_of
from services.core.domain import ContactRef, DirectorySnapshot


async def load_snapshot(db: asyncpg.Pool | asyncpg.Connection, account_id: str,
                        addresses: frozenset[str]) -> DirectorySnapshot:
    wanted = sorted(addresses)
    domains = sorted({domain_of(a) for a in wanted})
    contacts: defaultdict[str, set[ContactRef]] = defaultdict(set)
    for row in await db.fetch(
        """SELECT a.address, c.contact_id, c.client_id FROM contact_addresses a
             JOIN contacts c ON c.contact_id = a.contact_id
            WHERE a.account_id = $1 AND a.address = ANY($2::text[])""", account_id, wanted):
        contacts[row["address"]].add(ContactRef(row["contact_id"], row["client_id"]))
    colleagues = {r["address"] for r in await db.fetch(
        """SELECT a.address FROM user_addresses a JOIN users u ON u.user_id = a.user_id
            WHERE a.account_id = $1 AND a.address = ANY($2::text[]) AND u.deleted_at IS NULL""",
        account_id, wanted)}
    clients: defaultdict[str, set[str]] = defaultdict(set)
    for row in await db.fetch(
        "SELECT domain, client_id FROM client_domains WHERE account_id = $1 AND domain = ANY($2::text[])",
        account_id, domains):
        clients[row["domain"]].add(row["client_id"])
    blocked = await db.fetch(
        "SELECT entry, kind FROM blocklist_entries WHERE account_id = $1 AND entry = ANY($2::text[])",
        account_id, wanted + domains)
    domain_matching = await db.fetchval("SELECT domain_matching FROM accounts WHERE account_id = $1", account_id)
    return DirectorySnapshot(
        account_id=account_id,
        contacts_by_address={a: frozenset(refs) for a, refs in contacts.items()},
        colleague_addresses=frozenset(colleagues),
        clients_by_domain={d: frozenset(ids) for d, ids in clients.items()},
        blocked_addresses=frozenset(r["entry"] for r in blocked if r["kind"] == "address"),
        blocked_domains=frozenset(r["entry"] for r in blocked if r["kind"] == "domain"),
        domain_matching=bool(domain_matching),
    )


async def owner_addresses(db: asyncpg.Pool | asyncpg.Connection, user_id: str,
                          mailbox_addresses: tuple[str, ...]) -> frozenset[str]:
    """The mailbox owner's addresses: Graph's proxyAddresses plus the directory's primary and aliases."""
    rows = await db.fetch("SELECT address FROM user_addresses WHERE user_id = $1", user_id)
    return frozenset(mailbox_addresses) | {r["address"] for r in rows}

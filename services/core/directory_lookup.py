"""Loads what the directory knows about one message's participants: a handful of indexed queries."""

from __future__ import annotations

from collections import defaultdict

import asyncpg

from services.core.addresses import domain_of
from services.core.domain import ContactRef, DirectorySnapshot

_SNAPSHOT = """
    SELECT 'contact' AS kind, a.address AS key, c.contact_id AS id, c.client_id AS extra
      FROM contact_addresses a JOIN contacts c ON c.contact_id = a.contact_id
     WHERE a.account_id = $1 AND a.address = ANY($2::text[])
    UNION ALL
    SELECT 'colleague', a.address, NULL, NULL
      FROM user_addresses a JOIN users u ON u.user_id = a.user_id
     WHERE a.account_id = $1 AND a.address = ANY($2::text[]) AND u.deleted_at IS NULL
    UNION ALL
    -- shared mailboxes named through the API count as the account's own addresses
    SELECT 'colleague', address, NULL, NULL FROM shared_mailboxes WHERE account_id = $1 AND address = ANY($2::text[])
    UNION ALL
    SELECT 'client', domain, client_id, NULL FROM client_domains WHERE account_id = $1 AND domain = ANY($3::text[])
    UNION ALL
    SELECT 'blocked_' || kind, entry, NULL, NULL FROM blocklist_entries
     WHERE account_id = $1 AND entry = ANY($4::text[])
    UNION ALL
    SELECT 'account', NULL, domain_matching::text, NULL FROM accounts WHERE account_id = $1"""


async def load_snapshot(db: asyncpg.Pool | asyncpg.Connection, account_id: str,
                        addresses: frozenset[str]) -> DirectorySnapshot:
    """Everything the account's directory says about these addresses, in one indexed round trip."""
    wanted = sorted(addresses)
    domains = sorted({domain_of(a) for a in wanted})
    contacts: defaultdict[str, set[ContactRef]] = defaultdict(set)
    clients: defaultdict[str, set[str]] = defaultdict(set)
    colleagues: set[str] = set()
    blocked: dict[str, set[str]] = {"blocked_address": set(), "blocked_domain": set()}
    domain_matching = False
    for row in await db.fetch(_SNAPSHOT, account_id, wanted, domains, wanted + domains):
        kind = row["kind"]
        if kind == "contact":
            contacts[row["key"]].add(ContactRef(row["id"], row["extra"]))
        elif kind == "colleague":
            colleagues.add(row["key"])
        elif kind == "client":
            clients[row["key"]].add(row["id"])
        elif kind in blocked:
            blocked[kind].add(row["key"])
        elif kind == "account":
            domain_matching = row["id"] == "true"
    return DirectorySnapshot(
        account_id=account_id,
        contacts_by_address={a: frozenset(refs) for a, refs in contacts.items()},
        colleague_addresses=frozenset(colleagues),
        clients_by_domain={d: frozenset(ids) for d, ids in clients.items()},
        blocked_addresses=frozenset(blocked["blocked_address"]),
        blocked_domains=frozenset(blocked["blocked_domain"]),
        domain_matching=domain_matching,
    )


async def owner_addresses(db: asyncpg.Pool | asyncpg.Connection, user_id: str,
                          mailbox_addresses: tuple[str, ...]) -> frozenset[str]:
    """The mailbox owner's addresses: Graph's proxyAddresses plus the directory's primary and aliases."""
    rows = await db.fetch("SELECT address FROM user_addresses WHERE user_id = $1", user_id)
    return frozenset(mailbox_addresses) | {r["address"] for r in rows}

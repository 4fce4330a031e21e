"""The CRM's directory: accounts, users and their addresses, contacts, clients and their domains, blocklists.
The directory consumer (services/matcher/directory.py) writes them; the subscriber and the matcher read them."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Literal

import asyncpg

from services.core.adapters.store.base import Repository, in_scope
from services.core.domain.addresses import domain_of
from services.core.domain.model import ContactRef, DirectorySnapshot

Entity = Literal["user", "contact", "client"]

_OWNER = {
    "user": "SELECT account_id FROM users WHERE user_id = $1",
    "contact": "SELECT account_id FROM contacts WHERE contact_id = $1",
    "client": "SELECT account_id FROM clients WHERE client_id = $1",
}

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


class Directory(Repository):
    async def ensure_account(self, account_id: str) -> None:
        await self._db.execute("INSERT INTO accounts (account_id) VALUES ($1) ON CONFLICT DO NOTHING", account_id)

    async def account_of(self, user_id: str, account_id: str | None) -> str | None:
        """The user's account if it is `account_id` (any account for None), deleted users included."""
        value = await self._db.fetchval(
            f"SELECT account_id FROM users WHERE user_id = $1 AND {in_scope('account_id', 2)}",  # noqa: S608
            user_id, account_id)
        return str(value) if value is not None else None

    async def live_account_of(self, user_id: str, account_id: str | None) -> str | None:
        """As account_of, for users not deleted."""
        value = await self._db.fetchval(
            f"SELECT account_id FROM users WHERE user_id = $1 AND deleted_at IS NULL"  # noqa: S608
            f" AND {in_scope('account_id', 2)}", user_id, account_id)
        return str(value) if value is not None else None

    async def in_account(self, user_id: str, account_id: str) -> bool:
        return bool(await self._db.fetchval(
            "SELECT true FROM users WHERE user_id = $1 AND account_id = $2", user_id, account_id))

    async def email_of(self, user_id: str, account_id: str) -> str | None:
        """The user's address in the account's directory (`users.email`), None when there is none."""
        value = await self._db.fetchval(
            "SELECT email FROM users WHERE user_id = $1 AND account_id = $2 AND deleted_at IS NULL",
            user_id, account_id)
        return str(value) if value else None

    async def addresses(self, user_id: str, account_id: str) -> list[asyncpg.Record]:
        """(address, is_primary): `users.email` and the aliases of `user.upserted`; addresses learnt from
        Graph (`source = 'graph'`) are left out."""
        rows: list[asyncpg.Record] = await self._db.fetch(
            """SELECT u.email AS address, true AS is_primary FROM users u
                WHERE u.user_id = $1 AND u.account_id = $2 AND u.deleted_at IS NULL
               UNION ALL
               SELECT a.address, false FROM user_addresses a JOIN users u ON u.user_id = a.user_id
                WHERE a.user_id = $1 AND a.account_id = $2 AND u.account_id = $2 AND u.deleted_at IS NULL
                  AND a.source IN ('primary', 'alias')""", user_id, account_id)
        return rows

    async def admins(self, account_id: str, limit: int = 3) -> list[str]:
        """The account's administrators' addresses (role admin), a few, by address."""
        rows = await self._db.fetch(
            "SELECT email FROM users WHERE account_id = $1 AND role = 'admin' AND deleted_at IS NULL"
            " ORDER BY email LIMIT $2", account_id, limit)
        return [r["email"] for r in rows]

    async def overview(self, account_id: str) -> list[asyncpg.Record]:
        """Every user of the account with their connection, and why the organisation-wide connection did not
        enrol them (out_of_scope, failed) where it did not."""
        rows: list[asyncpg.Record] = await self._db.fetch(
            """SELECT u.user_id, u.email, c.connection_id, coalesce(c.status, 'never_connected') AS status,
                      c.reason, c.error_code, c.last_synced_at, c.mode, m.state AS tenant_state,
                      m.reason AS tenant_reason
                 FROM users u LEFT JOIN mailbox_connections c ON c.user_id = u.user_id
                                                            AND c.account_id = u.account_id
                 LEFT JOIN tenant_connections t ON t.account_id = u.account_id AND t.status = 'connected'
                 LEFT JOIN tenant_mailboxes m ON m.tenant_connection_id = t.tenant_connection_id
                                             AND m.user_id = u.user_id AND m.state IN ('out_of_scope', 'failed')
                WHERE u.account_id = $1 AND u.deleted_at IS NULL ORDER BY u.email, u.user_id""", account_id)
        return rows

    async def snapshot(self, account_id: str, addresses: frozenset[str]) -> DirectorySnapshot:
        """Everything the account's directory says about these addresses, in one indexed round trip."""
        wanted = sorted(addresses)
        domains = sorted({domain_of(a) for a in wanted})
        contacts: defaultdict[str, set[ContactRef]] = defaultdict(set)
        clients: defaultdict[str, set[str]] = defaultdict(set)
        colleagues: set[str] = set()
        blocked: dict[str, set[str]] = {"blocked_address": set(), "blocked_domain": set()}
        domain_matching = False
        for row in await self._db.fetch(_SNAPSHOT, account_id, wanted, domains, wanted + domains):
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

    async def known_addresses(self, user_id: str) -> frozenset[str]:
        """Every address user_addresses holds for the user: primary, aliases and those learnt from Graph."""
        rows = await self._db.fetch("SELECT address FROM user_addresses WHERE user_id = $1", user_id)
        return frozenset(r["address"] for r in rows)

    # The directory consumer's writes, each inside its transaction for one record.

    async def owner_account(self, entity: Entity, entity_id: str) -> str | None:
        """The account a user, contact or client belongs to (deleted users included), None for a new id."""
        value = await self._db.fetchval(_OWNER[entity], entity_id)
        return str(value) if value is not None else None

    async def upsert_user(self, user_id: str, account_id: str, *, email: str, never_log: list[str],
                          role: str) -> None:
        """Creates the user or updates it, undeleting it."""
        await self._db.execute(
            """INSERT INTO users (user_id, account_id, email, never_log, role) VALUES ($1, $2, $3, $4, $5)
               ON CONFLICT (user_id) DO UPDATE SET email = $3, never_log = $4, role = $5, deleted_at = NULL,
                                                   updated_at = now()""",
            user_id, account_id, email, never_log, role)

    async def set_user_addresses(self, user_id: str, account_id: str, email: str, aliases: Sequence[str]) -> None:
        """The user's primary address and aliases become these; addresses learnt from Graph stay."""
        await self._db.execute("DELETE FROM user_addresses WHERE user_id = $1 AND source IN ('primary', 'alias')",
                               user_id)
        await self._db.executemany(
            "INSERT INTO user_addresses (user_id, account_id, address, source) VALUES ($1, $2, $3, $4)"
            " ON CONFLICT DO NOTHING",
            [(user_id, account_id, email, "primary")] + [(user_id, account_id, a, "alias") for a in aliases])

    async def mark_user_deleted(self, user_id: str, account_id: str) -> None:
        await self._db.execute("UPDATE users SET deleted_at = now() WHERE user_id = $1 AND account_id = $2",
                               user_id, account_id)

    async def upsert_contact(self, contact_id: str, account_id: str, client_id: str | None) -> None:
        await self._db.execute(
            """INSERT INTO contacts (contact_id, account_id, client_id) VALUES ($1, $2, $3)
               ON CONFLICT (contact_id) DO UPDATE SET client_id = $3, updated_at = now()""",
            contact_id, account_id, client_id)

    async def set_contact_addresses(self, contact_id: str, account_id: str, emails: Sequence[str]) -> None:
        """The contact's addresses become these, the first one primary."""
        await self._db.execute("DELETE FROM contact_addresses WHERE contact_id = $1", contact_id)
        await self._db.executemany(
            "INSERT INTO contact_addresses (contact_id, account_id, address, is_primary) VALUES ($1, $2, $3, $4)",
            [(contact_id, account_id, a, i == 0) for i, a in enumerate(emails)])

    async def delete_contact(self, contact_id: str, account_id: str) -> None:
        await self._db.execute("DELETE FROM contacts WHERE contact_id = $1 AND account_id = $2",
                               contact_id, account_id)

    async def upsert_client(self, client_id: str, account_id: str, name: str) -> None:
        await self._db.execute(
            """INSERT INTO clients (client_id, account_id, name) VALUES ($1, $2, $3)
               ON CONFLICT (client_id) DO UPDATE SET name = $3, updated_at = now()""",
            client_id, account_id, name)

    async def set_client_domains(self, client_id: str, account_id: str, domains: Sequence[str]) -> None:
        await self._db.execute("DELETE FROM client_domains WHERE client_id = $1", client_id)
        await self._db.executemany(
            "INSERT INTO client_domains (client_id, account_id, domain) VALUES ($1, $2, $3)",
            [(client_id, account_id, d) for d in domains])

    async def replace_blocklist(self, account_id: str, entries: Sequence[tuple[str, str]]) -> dict[str, str]:
        """The account's blocklist becomes these (entry, kind) pairs; returns the one it replaced, entry -> kind."""
        before = {r["entry"]: r["kind"] for r in await self._db.fetch(
            "DELETE FROM blocklist_entries WHERE account_id = $1 RETURNING entry, kind", account_id)}
        await self._db.executemany(
            "INSERT INTO blocklist_entries (account_id, entry, kind) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
            [(account_id, e, k) for e, k in entries])
        return before

    async def set_account_settings(self, account_id: str, *, domain_matching: bool, name: str, capture: str,
                                   exclude_automated: bool) -> None:
        await self._db.execute(
            "UPDATE accounts SET domain_matching = $2, name = $3, capture = $4, exclude_automated = $5"
            " WHERE account_id = $1", account_id, domain_matching, name, capture, exclude_automated)

"""Applies `crm.directory.v1` records to the directory tables (idempotent: replaying is harmless)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from services.core import capture
from services.core.addresses import normalize_address
from services.core.event_types import (
    DIRECTORY_EVENTS,
    AccountUpserted,
    BlocklistUpserted,
    ClientUpserted,
    ContactDeleted,
    ContactUpserted,
    DirectoryEvent,
    Event,
    UserDeleted,
    UserUpserted,
)
from services.core.events import BadEvent
from services.core.never_log import canonical_entry


def _canonical(raw: list[str], canon: Callable[[str], str | None], refused: str) -> list[str]:
    """Each entry in canonical form, deduplicated, in the record's order; one that has none refuses the record."""
    out: list[str] = []
    for item in raw:
        value = canon(item)
        if value is None:
            raise BadEvent(refused.format(item=item[:80]))
        if value not in out:
            out.append(value)
    return out


def _normalised(raw: list[str], field: str) -> list[str]:
    return _canonical(raw, normalize_address, f"{field} holds {{item!r}}, which is not an email address")


def _never_log(raw_entries: list[str]) -> list[str]:
    """Canonical never_log entries ("addr@x" / "@domain")."""
    return _canonical(raw_entries, canonical_entry,
                      "never_log holds {item!r}, which is neither an address nor an @domain")


def _domain(raw: str) -> str:
    domain = raw.strip().lower().lstrip("@").rstrip(".")
    try:
        domain = domain.encode("idna").decode("ascii")
    except UnicodeError:
        raise BadEvent(f"{raw[:80]!r} is not a domain") from None
    if not domain or "." not in domain or "@" in domain or " " in domain:
        raise BadEvent(f"{raw[:80]!r} is not a domain")
    return domain


@dataclass(frozen=True)
class DirectoryChange:
    """What a record may change for already-seen mail: re-match these, unlink that contact."""

    account_id: str
    addresses: frozenset[str] = frozenset()
    domains: frozenset[str] = frozenset()
    deleted_contact: str | None = None
    kinds: tuple[str, ...] = field(default=())


_OWNER_SQL = {
    "user": "SELECT account_id FROM users WHERE user_id = $1",
    "contact": "SELECT account_id FROM contacts WHERE contact_id = $1",
    "client": "SELECT account_id FROM clients WHERE client_id = $1",
}


async def _same_account(conn: asyncpg.Connection, kind: str, entity_id: str, account_id: str) -> None:
    """Ids are global: a record must never move a user, contact or client into another tenant."""
    owner = await conn.fetchval(_OWNER_SQL[kind], entity_id)
    if owner is not None and owner != account_id:
        raise BadEvent(f"{kind} {entity_id} belongs to another account")


async def _account(conn: asyncpg.Connection, account_id: str) -> None:
    await conn.execute("INSERT INTO accounts (account_id) VALUES ($1) ON CONFLICT DO NOTHING", account_id)


async def apply_directory_event(conn: asyncpg.Connection,
                                record: Mapping[str, Any] | DirectoryEvent) -> DirectoryChange:
    """Apply one record inside the caller's transaction. Raises BadEvent. A type this version does not
    know changes nothing: consumers accept what newer producers add."""
    if isinstance(record, Event):
        event = record
    else:
        parsed = DIRECTORY_EVENTS.parse(record)
        if parsed is None:
            owner = record.get("account_id")
            return DirectoryChange(owner if isinstance(owner, str) else "", kinds=(str(record["type"]),))
        event = parsed
    kind, account_id = event.type_name(), event.account_id
    await _account(conn, account_id)
    change = DirectoryChange(account_id, kinds=(kind,))
    match event:
        case UserUpserted():
            user_id = event.user_id
            email = _normalised([event.email], "email")[0]
            aliases = [a for a in _normalised(event.aliases, "aliases") if a != email]
            never_log, role = _never_log(event.never_log), event.role or "member"
            await _same_account(conn, "user", user_id, account_id)
            await conn.execute(
                """INSERT INTO users (user_id, account_id, email, never_log, role) VALUES ($1, $2, $3, $4, $5)
                   ON CONFLICT (user_id) DO UPDATE SET email = $3, never_log = $4, role = $5, deleted_at = NULL,
                                                       updated_at = now()""",
                user_id, account_id, email, never_log, role)
            await conn.execute("DELETE FROM user_addresses WHERE user_id = $1 AND source IN ('primary', 'alias')",
                               user_id)
            await conn.executemany(
                "INSERT INTO user_addresses (user_id, account_id, address, source) VALUES ($1, $2, $3, $4)"
                " ON CONFLICT DO NOTHING",
                [(user_id, account_id, email, "primary")] + [(user_id, account_id, a, "alias") for a in aliases])
            change = DirectoryChange(account_id, addresses=frozenset([email, *aliases]), kinds=(kind,))
        case UserDeleted():
            await conn.execute("UPDATE users SET deleted_at = now() WHERE user_id = $1 AND account_id = $2",
                               event.user_id, account_id)
        case ContactUpserted():
            contact_id = event.contact_id
            emails = _normalised(event.emails, "emails")
            await _same_account(conn, "contact", contact_id, account_id)
            await conn.execute(
                """INSERT INTO contacts (contact_id, account_id, client_id) VALUES ($1, $2, $3)
                   ON CONFLICT (contact_id) DO UPDATE SET client_id = $3, updated_at = now()""",
                contact_id, account_id, event.client_id)
            await conn.execute("DELETE FROM contact_addresses WHERE contact_id = $1", contact_id)
            await conn.executemany(
                "INSERT INTO contact_addresses (contact_id, account_id, address, is_primary) VALUES ($1, $2, $3, $4)",
                [(contact_id, account_id, a, i == 0) for i, a in enumerate(emails)])
            change = DirectoryChange(account_id, addresses=frozenset(emails), kinds=(kind,))
        case ContactDeleted():
            await conn.execute("DELETE FROM contacts WHERE contact_id = $1 AND account_id = $2",
                               event.contact_id, account_id)
            change = DirectoryChange(account_id, deleted_contact=event.contact_id, kinds=(kind,))
        case ClientUpserted():
            client_id = event.client_id
            domains = sorted({_domain(d) for d in event.domains})
            await _same_account(conn, "client", client_id, account_id)
            await conn.execute(
                """INSERT INTO clients (client_id, account_id, name) VALUES ($1, $2, $3)
                   ON CONFLICT (client_id) DO UPDATE SET name = $3, updated_at = now()""",
                client_id, account_id, event.name or "")
            await conn.execute("DELETE FROM client_domains WHERE client_id = $1", client_id)
            await conn.executemany(
                "INSERT INTO client_domains (client_id, account_id, domain) VALUES ($1, $2, $3)",
                [(client_id, account_id, d) for d in domains])
            change = DirectoryChange(account_id, domains=frozenset(domains), kinds=(kind,))
        case BlocklistUpserted():
            entries: list[tuple[str, str]] = []
            for raw in event.entries:
                if "@" in raw.strip().lstrip("@"):
                    entries.append((_normalised([raw], "entries")[0], "address"))
                else:
                    entries.append((_domain(raw), "domain"))
            before = {r["entry"]: r["kind"] for r in await conn.fetch(
                "DELETE FROM blocklist_entries WHERE account_id = $1 RETURNING entry, kind", account_id)}
            await conn.executemany(
                "INSERT INTO blocklist_entries (account_id, entry, kind) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
                [(account_id, e, k) for e, k in entries])
            lifted = {e: k for e, k in before.items() if e not in {entry for entry, _ in entries}}
            change = DirectoryChange(account_id,
                                     addresses=frozenset(e for e, k in lifted.items() if k == "address"),
                                     domains=frozenset(e for e, k in lifted.items() if k == "domain"), kinds=(kind,))
        case AccountUpserted():
            # Like domain_matching, an omitted field takes its default: the record states the whole account.
            # A new tier applies to mail decided from now on; `mailsync purge-content` trims what is stored.
            tier = event.capture or capture.DEFAULT
            await conn.execute(
                "UPDATE accounts SET domain_matching = $2, name = $3, capture = $4, exclude_automated = $5"
                " WHERE account_id = $1", account_id, event.domain_matching, event.name or "", tier.value,
                event.exclude_automated)
    return change

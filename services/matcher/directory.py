"""Applies `crm.directory.v1` records to the directory tables (idempotent: replaying is harmless)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import asyncpg

from services.core.adapters.store.directory import Directory, Entity
from services.core.domain import capture
from services.core.domain.addresses import normalize_address
from services.core.domain.event_types import (
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
from services.core.domain.events import BadEvent
from services.core.domain.never_log import canonical_entry


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


class DirectoryWriter(Protocol):
    """The statements a record turns into (services/core/adapters/store/directory.py's Directory)."""

    async def ensure_account(self, account_id: str) -> None: ...
    async def owner_account(self, entity: Entity, entity_id: str) -> str | None: ...
    async def upsert_user(self, user_id: str, account_id: str, *, email: str, never_log: list[str],
                          role: str) -> None: ...
    async def set_user_addresses(self, user_id: str, account_id: str, email: str,
                                 aliases: Sequence[str]) -> None: ...
    async def mark_user_deleted(self, user_id: str, account_id: str) -> None: ...
    async def upsert_contact(self, contact_id: str, account_id: str, client_id: str | None) -> None: ...
    async def set_contact_addresses(self, contact_id: str, account_id: str, emails: Sequence[str]) -> None: ...
    async def delete_contact(self, contact_id: str, account_id: str) -> None: ...
    async def upsert_client(self, client_id: str, account_id: str, name: str) -> None: ...
    async def set_client_domains(self, client_id: str, account_id: str, domains: Sequence[str]) -> None: ...
    async def replace_blocklist(self, account_id: str, entries: Sequence[tuple[str, str]]) -> dict[str, str]: ...
    async def set_account_settings(self, account_id: str, *, domain_matching: bool, name: str, capture: str,
                                   exclude_automated: bool) -> None: ...


async def _same_account(directory: DirectoryWriter, entity: Entity, entity_id: str, account_id: str) -> None:
    """Ids are global: a record must never move a user, contact or client into another tenant."""
    owner = await directory.owner_account(entity, entity_id)
    if owner is not None and owner != account_id:
        raise BadEvent(f"{entity} {entity_id} belongs to another account")


async def apply_directory_event(conn: asyncpg.Connection,
                                record: Mapping[str, Any] | DirectoryEvent) -> DirectoryChange:
    """Apply one record inside the caller's transaction. Raises BadEvent."""
    return await apply_record(Directory(conn), record)


async def apply_record(directory: DirectoryWriter, record: Mapping[str, Any] | DirectoryEvent) -> DirectoryChange:
    """Apply one record through the directory's repository. Raises BadEvent. A type this version does not
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
    await directory.ensure_account(account_id)
    change = DirectoryChange(account_id, kinds=(kind,))
    match event:
        case UserUpserted():
            user_id = event.user_id
            email = _normalised([event.email], "email")[0]
            aliases = [a for a in _normalised(event.aliases, "aliases") if a != email]
            never_log, role = _never_log(event.never_log), event.role or "member"
            await _same_account(directory, "user", user_id, account_id)
            await directory.upsert_user(user_id, account_id, email=email, never_log=never_log, role=role)
            await directory.set_user_addresses(user_id, account_id, email, aliases)
            change = DirectoryChange(account_id, addresses=frozenset([email, *aliases]), kinds=(kind,))
        case UserDeleted():
            await directory.mark_user_deleted(event.user_id, account_id)
        case ContactUpserted():
            contact_id = event.contact_id
            emails = _normalised(event.emails, "emails")
            await _same_account(directory, "contact", contact_id, account_id)
            await directory.upsert_contact(contact_id, account_id, event.client_id)
            await directory.set_contact_addresses(contact_id, account_id, emails)
            change = DirectoryChange(account_id, addresses=frozenset(emails), kinds=(kind,))
        case ContactDeleted():
            await directory.delete_contact(event.contact_id, account_id)
            change = DirectoryChange(account_id, deleted_contact=event.contact_id, kinds=(kind,))
        case ClientUpserted():
            client_id = event.client_id
            domains = sorted({_domain(d) for d in event.domains})
            await _same_account(directory, "client", client_id, account_id)
            await directory.upsert_client(client_id, account_id, event.name or "")
            await directory.set_client_domains(client_id, account_id, domains)
            change = DirectoryChange(account_id, domains=frozenset(domains), kinds=(kind,))
        case BlocklistUpserted():
            entries: list[tuple[str, str]] = []
            for raw in event.entries:
                if "@" in raw.strip().lstrip("@"):
                    entries.append((_normalised([raw], "entries")[0], "address"))
                else:
                    entries.append((_domain(raw), "domain"))
            before = await directory.replace_blocklist(account_id, entries)
            lifted = {e: k for e, k in before.items() if e not in {entry for entry, _ in entries}}
            change = DirectoryChange(account_id,
                                     addresses=frozenset(e for e, k in lifted.items() if k == "address"),
                                     domains=frozenset(e for e, k in lifted.items() if k == "domain"), kinds=(kind,))
        case AccountUpserted():
            # Like domain_matching, an omitted field takes its default: the record states the whole account.
            # A new tier applies to mail decided from now on; `mailsync purge-content` trims what is stored.
            tier = event.capture or capture.DEFAULT
            await directory.set_account_settings(account_id, domain_matching=event.domain_matching,
                                                 name=event.name or "", capture=tier.value,
                                                 exclude_automated=event.exclude_automated)
    return change

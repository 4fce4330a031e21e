"""Loads what the directory knows about one message's participants: a handful of indexed queries."""

from __future__ import annotations

from services.core.adapters.store.base import Db
from services.core.adapters.store.directory import Directory
from services.core.domain.model import DirectorySnapshot


async def load_snapshot(db: Db, account_id: str, addresses: frozenset[str]) -> DirectorySnapshot:
    """Everything the account's directory says about these addresses, in one indexed round trip."""
    return await Directory(db).snapshot(account_id, addresses)


async def owner_addresses(db: Db, user_id: str, mailbox_addresses: tuple[str, ...]) -> frozenset[str]:
    """The mailbox owner's addresses: Graph's proxyAddresses plus the directory's primary and aliases."""
    return frozenset(mailbox_addresses) | await Directory(db).known_addresses(user_id)

"""One directory read for many messages (pure): a batch loads one snapshot per account for the union of its
messages' addresses, and each message is decided on exactly the part of it that concerns its own addresses."""

from __future__ import annotations

from dataclasses import replace

from services.core.addresses import domain_of
from services.core.domain import DirectorySnapshot


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

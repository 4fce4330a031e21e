"""Directory records applied without PostgreSQL: services/matcher/directory.apply_record against an in-memory
fake of the Directory repository (services/core/adapters/store/directory.py has the real one)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import pytest

from services.core.adapters.store.directory import Entity
from services.core.domain.events import BadEvent
from services.matcher.directory import DirectoryChange, apply_record

ACCOUNT, OTHER = "acct-1", "acct-2"


@dataclass
class FakeDirectory:
    """The directory's tables as dicts; `calls` names each statement in order."""
    owners: dict[tuple[str, str], str] = field(default_factory=dict)  # (entity, id) -> account
    accounts: dict[str, dict[str, object]] = field(default_factory=dict)
    users: dict[str, dict[str, object]] = field(default_factory=dict)
    user_addresses: dict[str, tuple[str, list[str]]] = field(default_factory=dict)
    contacts: dict[str, str | None] = field(default_factory=dict)
    contact_addresses: dict[str, list[str]] = field(default_factory=dict)
    clients: dict[str, str] = field(default_factory=dict)
    client_domains: dict[str, list[str]] = field(default_factory=dict)
    blocklist: dict[str, dict[str, str]] = field(default_factory=dict)
    calls: list[str] = field(default_factory=list)

    async def ensure_account(self, account_id: str) -> None:
        self.calls.append("ensure_account")
        self.accounts.setdefault(account_id, {})

    async def owner_account(self, entity: Entity, entity_id: str) -> str | None:
        self.calls.append("owner_account")
        return self.owners.get((entity, entity_id))

    async def upsert_user(self, user_id: str, account_id: str, *, email: str, never_log: list[str],
                          role: str) -> None:
        self.calls.append("upsert_user")
        self.owners[("user", user_id)] = account_id
        self.users[user_id] = {"email": email, "never_log": never_log, "role": role, "deleted": False}

    async def set_user_addresses(self, user_id: str, account_id: str, email: str, aliases: Sequence[str]) -> None:
        self.calls.append("set_user_addresses")
        self.user_addresses[user_id] = (email, list(aliases))

    async def mark_user_deleted(self, user_id: str, account_id: str) -> None:
        self.calls.append("mark_user_deleted")
        if self.owners.get(("user", user_id)) == account_id:
            self.users[user_id]["deleted"] = True

    async def upsert_contact(self, contact_id: str, account_id: str, client_id: str | None) -> None:
        self.calls.append("upsert_contact")
        self.owners[("contact", contact_id)] = account_id
        self.contacts[contact_id] = client_id

    async def set_contact_addresses(self, contact_id: str, account_id: str, emails: Sequence[str]) -> None:
        self.calls.append("set_contact_addresses")
        self.contact_addresses[contact_id] = list(emails)

    async def delete_contact(self, contact_id: str, account_id: str) -> None:
        self.calls.append("delete_contact")
        if self.owners.get(("contact", contact_id)) == account_id:
            del self.owners[("contact", contact_id)]
            self.contacts.pop(contact_id, None)
            self.contact_addresses.pop(contact_id, None)

    async def upsert_client(self, client_id: str, account_id: str, name: str) -> None:
        self.calls.append("upsert_client")
        self.owners[("client", client_id)] = account_id
        self.clients[client_id] = name

    async def set_client_domains(self, client_id: str, account_id: str, domains: Sequence[str]) -> None:
        self.calls.append("set_client_domains")
        self.client_domains[client_id] = list(domains)

    async def replace_blocklist(self, account_id: str, entries: Sequence[tuple[str, str]]) -> dict[str, str]:
        self.calls.append("replace_blocklist")
        before = self.blocklist.get(account_id, {})
        self.blocklist[account_id] = dict(entries)
        return before

    async def set_account_settings(self, account_id: str, *, domain_matching: bool, name: str, capture: str,
                                   exclude_automated: bool) -> None:
        self.calls.append("set_account_settings")
        self.accounts[account_id] = {"domain_matching": domain_matching, "name": name, "capture": capture,
                                     "exclude_automated": exclude_automated}


def _user(**fields: object) -> dict[str, object]:
    return {"type": "user.upserted", "user_id": "u1", "account_id": ACCOUNT, "email": "Ann@Example.com", **fields}


async def test_a_user_gets_a_canonical_primary_and_aliases_without_the_primary_again() -> None:
    directory = FakeDirectory()
    change = await apply_record(directory, _user(aliases=["ann@example.com", "A.Nn@Example.org", "a.nn@example.org"],
                                                 never_log=["Boss@Example.com", "@Example.NET"]))
    assert directory.user_addresses["u1"] == ("ann@example.com", ["a.nn@example.org"])
    assert directory.users["u1"] == {"email": "ann@example.com", "never_log": ["boss@example.com", "@example.net"],
                                     "role": "member", "deleted": False}
    assert change == DirectoryChange(ACCOUNT, addresses=frozenset({"ann@example.com", "a.nn@example.org"}),
                                     kinds=("user.upserted",))
    assert directory.calls == ["ensure_account", "owner_account", "upsert_user", "set_user_addresses"]


async def test_a_record_cannot_move_an_entity_of_another_account() -> None:
    records: list[tuple[Entity, dict[str, object]]] = [
        ("user", _user()),
        ("contact", {"type": "contact.upserted", "contact_id": "u1", "account_id": ACCOUNT,
                     "emails": ["c@client.example"]}),
        ("client", {"type": "client.upserted", "client_id": "u1", "account_id": ACCOUNT,
                    "domains": ["client.example"]}),
    ]
    for entity, record in records:
        directory = FakeDirectory(owners={(entity, "u1"): OTHER})
        with pytest.raises(BadEvent, match=f"{entity} u1 belongs to another account"):
            await apply_record(directory, record)
        assert directory.calls == ["ensure_account", "owner_account"], entity  # nothing written


async def test_a_malformed_address_refuses_the_record_before_any_statement() -> None:
    directory = FakeDirectory()
    with pytest.raises(BadEvent, match="aliases holds 'not an address'"):
        await apply_record(directory, _user(aliases=["not an address"]))
    assert directory.calls == ["ensure_account"]


async def test_a_contact_keeps_its_first_address_primary_and_its_deletion_unlinks_it() -> None:
    directory = FakeDirectory()
    change = await apply_record(directory, {"type": "contact.upserted", "contact_id": "c1", "account_id": ACCOUNT,
                                            "client_id": "k1", "emails": ["B@Client.example", "b@client.example",
                                                                          "x@client.example"]})
    assert directory.contact_addresses["c1"] == ["b@client.example", "x@client.example"]
    assert change.addresses == frozenset({"b@client.example", "x@client.example"})
    assert directory.contacts == {"c1": "k1"}
    deleted = await apply_record(directory, {"type": "contact.deleted", "contact_id": "c1", "account_id": ACCOUNT})
    assert deleted == DirectoryChange(ACCOUNT, deleted_contact="c1", kinds=("contact.deleted",))
    assert directory.contacts == {}


async def test_a_client_stores_its_domains_canonical_sorted_and_once() -> None:
    directory = FakeDirectory()
    change = await apply_record(directory, {"type": "client.upserted", "client_id": "k1", "account_id": ACCOUNT,
                                            "domains": ["Zeta.example", "@alpha.example.", "zeta.example"]})
    assert directory.client_domains["k1"] == ["alpha.example", "zeta.example"] and directory.clients["k1"] == ""
    assert change.domains == frozenset({"alpha.example", "zeta.example"})
    with pytest.raises(BadEvent, match="is not a domain"):
        await apply_record(directory, {"type": "client.upserted", "client_id": "k1", "account_id": ACCOUNT,
                                       "domains": ["localhost"]})


async def test_a_new_blocklist_reports_the_lifted_entries_for_rematching() -> None:
    directory = FakeDirectory(blocklist={ACCOUNT: {"old@x.example": "address", "gone.example": "domain",
                                                   "kept.example": "domain"}})
    change = await apply_record(directory, {"type": "blocklist.upserted", "account_id": ACCOUNT,
                                            "entries": ["Kept.example", "New@Y.example"]})
    assert directory.blocklist[ACCOUNT] == {"kept.example": "domain", "new@y.example": "address"}
    assert (change.addresses, change.domains) == (frozenset({"old@x.example"}), frozenset({"gone.example"}))


async def test_an_account_record_states_the_whole_account_omitted_fields_take_their_defaults() -> None:
    directory = FakeDirectory()
    await apply_record(directory, {"type": "account.upserted", "account_id": ACCOUNT, "capture": "preview",
                                   "domain_matching": True, "exclude_automated": False, "name": "Acme"})
    await apply_record(directory, {"type": "account.upserted", "account_id": OTHER})
    assert directory.accounts == {
        ACCOUNT: {"domain_matching": True, "name": "Acme", "capture": "preview", "exclude_automated": False},
        OTHER: {"domain_matching": False, "name": "", "capture": "subject", "exclude_automated": True}}


async def test_a_user_deletion_marks_only_a_user_of_the_account() -> None:
    directory = FakeDirectory()
    await apply_record(directory, _user(role="admin"))
    await apply_record(directory, {"type": "user.deleted", "user_id": "u1", "account_id": OTHER})
    assert directory.users["u1"]["deleted"] is False and directory.users["u1"]["role"] == "admin"
    change = await apply_record(directory, {"type": "user.deleted", "user_id": "u1", "account_id": ACCOUNT})
    assert directory.users["u1"]["deleted"] is True and change.addresses == frozenset()

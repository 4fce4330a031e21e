"""Properties of the matching rules: what must hold for every message and every directory."""

from __future__ import annotations

import random  # seeded by hypothesis: one draw instead of one per character
from collections.abc import Callable
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.core.domain.matching import addresses_to_look_up, decide
from services.core.domain.model import (
    ContactRef,
    Decision,
    DirectorySnapshot,
    EmailAddress,
    MailboxOwner,
    MailMessage,
    MatchResult,
    Reason,
)

ACCOUNT_A, ACCOUNT_B = "acc-a", "acc-b"
OWNER_ADDRESSES = ("me@us.example", "me.alias@us-corp.example")
OWNER_VARIANTS = (*OWNER_ADDRESSES, "me+crm@us.example", "me.alias+x@us-corp.example")
COLLEAGUES = ("ann@us.example", "bob@us.example", "carol@us-corp.example")
OUTSIDERS = (
    "jane@acme.example",
    "jane.doe@acme-mail.example",
    "joe@acme.example",
    "kim@beta.example",
    "lee@beta.example",
    "jane+news@acme.example",
    "info@bücher.example",
    "max@free.example",
    "spam@spam.example",
    "x@eu.acme.example",
)
DOMAINS = ("acme.example", "acme-mail.example", "beta.example", "xn--bcher-kva.example", "free.example",
           "spam.example", "eu.acme.example")  # fmt: skip
OWNER_A = MailboxOwner(user_id="u-a", account_id=ACCOUNT_A, addresses=frozenset(OWNER_ADDRESSES))

everyone = st.sampled_from((*OWNER_VARIANTS, *COLLEAGUES, *OUTSIDERS))
insiders = st.sampled_from((*OWNER_VARIANTS, *COLLEAGUES))
# Weighted towards folders that are matched, so most examples exercise the matching rules.
folders = st.sampled_from(
    ("inbox", "inbox", "inbox", "sentitems", "sentitems", "archive", "other", "other", "junkemail", "drafts")
)


def _normal(addr: str) -> str:
    local, domain = addr.split("@")
    return f"{local}@{domain.encode('idna').decode('ascii')}"


KNOWN = tuple(_normal(a) for a in (*OUTSIDERS, *COLLEAGUES, *OWNER_ADDRESSES))
BLOCKABLE = tuple(_normal(a) for a in OUTSIDERS)


@st.composite
def directories(draw: st.DrawFn, account_id: str = ACCOUNT_A, id_prefix: str = "a") -> DirectorySnapshot:
    """A random directory of one account; its contact and client ids all start with ``id_prefix``."""
    clients = [f"{id_prefix}-k{i}" for i in range(4)]
    contact_ids = [f"{id_prefix}-c{i}" for i in range(6)]
    refs = st.builds(ContactRef, st.sampled_from(contact_ids), st.sampled_from([None, *clients]))
    contact_addresses = draw(st.lists(st.sampled_from(KNOWN), max_size=8))
    client_domains = draw(st.lists(st.sampled_from(DOMAINS), max_size=3))
    return DirectorySnapshot(
        account_id=account_id,
        contacts_by_address={a: frozenset(draw(st.lists(refs, max_size=2))) for a in contact_addresses},
        colleague_addresses=frozenset((*OWNER_ADDRESSES, *COLLEAGUES)),
        clients_by_domain={d: frozenset(draw(st.lists(st.sampled_from(clients), max_size=2))) for d in client_domains},
        blocked_addresses=frozenset(draw(st.lists(st.sampled_from(BLOCKABLE), max_size=2))),
        blocked_domains=frozenset(draw(st.lists(st.sampled_from(DOMAINS), max_size=1))),
        domain_matching=draw(st.booleans()),
    )


def _ea(address: str) -> EmailAddress:
    return EmailAddress(address=address, name="")


@st.composite
def messages(draw: st.DrawFn, people: st.SearchStrategy[str] = everyone) -> MailMessage:
    recipients = st.lists(people, max_size=5)
    return MailMessage(
        message_id="m",
        internet_message_id="<m@x>",
        conversation_id="c",
        subject="s",
        folder=draw(folders),
        is_draft=draw(st.integers(0, 9)) == 0,  # drafts are rarer
        received_at=None,
        sent_at=None,
        from_=draw(st.none() | people.map(_ea)),
        sender=draw(st.none() | people.map(_ea)),
        to=tuple(map(_ea, draw(recipients))),
        cc=tuple(map(_ea, draw(recipients))),
        bcc=tuple(map(_ea, draw(recipients))),
        reply_to=tuple(map(_ea, draw(st.lists(people, max_size=2)))),
    )


def key(result: MatchResult) -> tuple[object, ...]:
    return result.decision, result.contact_ids, result.client_ids, result.direction, result.reasons


def _recase(rng: random.Random, text: str) -> str:
    return "".join(ch.upper() if rng.random() < 0.5 else ch.lower() for ch in text)


def _map_addresses(message: MailMessage, fn: Callable[[EmailAddress], EmailAddress]) -> MailMessage:
    return replace(
        message,
        from_=fn(message.from_) if message.from_ else None,
        sender=fn(message.sender) if message.sender else None,
        to=tuple(map(fn, message.to)),
        cc=tuple(map(fn, message.cc)),
        bcc=tuple(map(fn, message.bcc)),
        reply_to=tuple(map(fn, message.reply_to)),
    )


@settings(max_examples=200, deadline=None)
@given(message=messages(), directory=directories(), seed=st.integers(0, 2**32 - 1).map(random.Random))
def test_decision_ignores_address_case(message: MailMessage, directory: DirectorySnapshot, seed: random.Random) -> None:
    recased = _map_addresses(message, lambda ea: replace(ea, address=_recase(seed, ea.address)))
    assert key(decide(recased, OWNER_A, directory)) == key(decide(message, OWNER_A, directory))
    assert addresses_to_look_up(recased, OWNER_A) == addresses_to_look_up(message, OWNER_A)


@settings(max_examples=200, deadline=None)
@given(message=messages(), directory=directories(), seed=st.integers(0, 2**32 - 1).map(random.Random))
def test_decision_ignores_recipient_order(
    message: MailMessage, directory: DirectorySnapshot, seed: random.Random
) -> None:
    def shuffled(items: tuple[EmailAddress, ...]) -> tuple[EmailAddress, ...]:
        copy = list(items)
        seed.shuffle(copy)
        return tuple(copy)

    permuted = replace(
        message,
        to=shuffled(message.to),
        cc=shuffled(message.cc),
        bcc=shuffled(message.bcc),
        reply_to=shuffled(message.reply_to),
    )
    assert key(decide(permuted, OWNER_A, directory)) == key(decide(message, OWNER_A, directory))


@settings(max_examples=200, deadline=None)
@given(message=messages(), directory=directories(), data=st.data())
def test_decision_ignores_duplicated_recipients(
    message: MailMessage, directory: DirectorySnapshot, data: st.DataObject
) -> None:
    def duplicated(items: tuple[EmailAddress, ...]) -> tuple[EmailAddress, ...]:
        if not items:
            return items
        extra = data.draw(st.lists(st.sampled_from(items), max_size=3))
        wrapped = [replace(ea, address=f'"Someone" <{ea.address.upper()}>') for ea in extra]
        return (*items, *wrapped)

    doubled = replace(
        message,
        to=duplicated(message.to),
        cc=duplicated(message.cc),
        bcc=duplicated(message.bcc),
        reply_to=duplicated(message.reply_to),
    )
    assert key(decide(doubled, OWNER_A, directory)) == key(decide(message, OWNER_A, directory))
    assert len(decide(doubled, OWNER_A, directory).participants) == len(
        decide(message, OWNER_A, directory).participants
    )


@settings(max_examples=200, deadline=None)
@given(message=messages(), directory_a=directories(), directory_b=directories(ACCOUNT_B, "b"))
def test_never_matched_to_another_accounts_contacts(
    message: MailMessage, directory_a: DirectorySnapshot, directory_b: DirectorySnapshot
) -> None:
    with pytest.raises(ValueError, match="tenants never mix"):
        decide(message, OWNER_A, directory_b)

    result = decide(message, OWNER_A, directory_a)
    own_contacts = {ref.contact_id for refs in directory_a.contacts_by_address.values() for ref in refs}
    own_clients = {ref.client_id for refs in directory_a.contacts_by_address.values() for ref in refs} | {
        client for clients in directory_a.clients_by_domain.values() for client in clients
    }
    assert set(result.contact_ids) <= own_contacts
    assert set(result.client_ids) <= own_clients
    assert not any(i.startswith("b-") for i in (*result.contact_ids, *result.client_ids))
    assert list(result.contact_ids) == sorted(set(result.contact_ids))
    assert list(result.client_ids) == sorted(set(result.client_ids))


@settings(max_examples=200, deadline=None)
@given(message=messages(people=insiders), directory=directories(), seed=st.integers(0, 2**32 - 1).map(random.Random))
def test_owner_and_colleague_mail_is_never_matched(
    message: MailMessage, directory: DirectorySnapshot, seed: random.Random
) -> None:
    # Even when the directory (wrongly) lists insiders as contacts or their domains as client domains.
    polluted = replace(
        directory,
        contacts_by_address={a: frozenset({ContactRef("a-bad", "a-bad")}) for a in (*OWNER_ADDRESSES, *COLLEAGUES)},
        clients_by_domain={"us.example": frozenset({"a-bad"}), "us-corp.example": frozenset({"a-bad"})},
        domain_matching=True,
    )
    recased = _map_addresses(message, lambda ea: replace(ea, address=_recase(seed, ea.address)))
    for snapshot in (directory, polluted):
        result = decide(recased, OWNER_A, snapshot)
        assert result.decision is not Decision.MATCHED
        assert result.contact_ids == ()
        assert result.client_ids == ()


@settings(max_examples=200, deadline=None)
@given(message=messages(), directory=directories())
def test_matched_iff_ids_and_first_reason_is_the_headline(message: MailMessage, directory: DirectorySnapshot) -> None:
    result = decide(message, OWNER_A, directory)
    assert (result.decision is Decision.MATCHED) == bool(result.contact_ids or result.client_ids)
    assert result.reasons[-1].code in {"direction_inbound", "direction_outbound"}
    assert result.reasons[-1].code == f"direction_{result.direction}"
    if result.decision is Decision.EXCLUDED:
        assert message.is_draft or message.folder in {"junkemail", "deleteditems", "drafts"}
    # Blocked addresses never contribute: removing everything blocked from the directory's contacts
    # and domains changes nothing.
    unblocked = replace(
        directory,
        contacts_by_address={
            a: r for a, r in directory.contacts_by_address.items()
            if a not in directory.blocked_addresses and a.split("@")[1] not in directory.blocked_domains
        },
        clients_by_domain={d: c for d, c in directory.clients_by_domain.items() if d not in directory.blocked_domains},
    )  # fmt: skip
    assert key(decide(message, OWNER_A, unblocked))[:4] == key(result)[:4]


# --- Positive oracles: the properties above also hold for a `decide` that never matches, so these
# check that mail which must match, by construction or by an independent model of the rules, does.

MATCHED_FOLDERS = ("inbox", "sentitems", "archive", "other")
CONTACT_ROLES = ("from", "sender", "to", "cc", "reply_to")


def _model(message: MailMessage, directory: DirectorySnapshot) -> tuple[Decision, set[str], set[str]]:
    """The README's matching rules, written out independently for the generators' address space."""
    if message.is_draft or message.folder in {"junkemail", "deleteditems", "drafts", "outbox"}:
        return Decision.EXCLUDED, set(), set()
    owner = {a.lower() for a in OWNER_ADDRESSES}

    def is_owner(addr: str) -> bool:
        local, domain = addr.split("@")
        return addr in owner or f"{local.split('+')[0]}@{domain}" in owner

    sender = message.from_ or message.sender
    outbound = sender is not None and is_owner(_normal(sender.address.lower()))
    people = [message.from_, message.sender, *message.to, *message.cc, *message.reply_to,
              *(message.bcc if outbound else ())]  # fmt: skip
    candidates = {_normal(ea.address.lower()) for ea in people if ea is not None}
    colleagues = {_normal(a) for a in (*OWNER_ADDRESSES, *COLLEAGUES)}
    contacts: set[str] = set()
    clients: set[str] = set()
    for addr in candidates:
        domain = addr.split("@")[1]
        if is_owner(addr) or addr in colleagues:
            continue
        if addr in directory.blocked_addresses or domain in directory.blocked_domains:
            continue
        refs = directory.contacts_by_address.get(addr, frozenset())
        if refs:
            contacts |= {r.contact_id for r in refs}
            clients |= {r.client_id for r in refs if r.client_id is not None}
        elif directory.domain_matching:
            clients |= set(directory.clients_by_domain.get(domain, frozenset()))
    if contacts or clients:
        return Decision.MATCHED, contacts, clients
    return Decision.NOT_MATCHED, set(), set()


@st.composite
def must_match(draw: st.DrawFn) -> tuple[MailMessage, DirectorySnapshot, str, frozenset[ContactRef]]:
    """A message with a known, unblocked contact among its counted participants, in a matched folder,
    not a draft: whatever else it carries, it must be MATCHED to (at least) that contact."""
    directory = draw(directories())
    raw = draw(st.sampled_from(OUTSIDERS))
    address = _normal(raw)
    refs = frozenset(
        draw(
            st.lists(
                st.builds(
                    ContactRef, st.sampled_from([f"a-c{i}" for i in range(6)]), st.sampled_from([None, "a-k0", "a-k1"])
                ),
                min_size=1,
                max_size=2,
            )
        )
    )
    directory = replace(
        directory,
        contacts_by_address={**directory.contacts_by_address, address: refs},
        blocked_addresses=directory.blocked_addresses - {address},
        blocked_domains=directory.blocked_domains - {address.split("@")[1]},
    )
    message = replace(draw(messages()), folder=draw(st.sampled_from(MATCHED_FOLDERS)), is_draft=False)
    as_written = EmailAddress(address=draw(st.sampled_from([raw, raw.upper(), f"Contact <{raw}>"])), name="")
    role = draw(st.sampled_from(CONTACT_ROLES))
    if role in ("from", "sender"):
        message = replace(message, **{"from_" if role == "from" else "sender": as_written})
    else:
        message = replace(message, **{role: (*getattr(message, role), as_written)})
    return message, directory, address, refs


@settings(max_examples=300, deadline=None)
@given(case=must_match())
def test_a_known_unblocked_contact_among_the_participants_is_matched(
    case: tuple[MailMessage, DirectorySnapshot, str, frozenset[ContactRef]],
) -> None:
    message, directory, address, refs = case
    result = decide(message, OWNER_A, directory)
    assert result.decision is Decision.MATCHED, result.reasons
    assert {r.contact_id for r in refs} <= set(result.contact_ids)
    assert {r.client_id for r in refs if r.client_id} <= set(result.client_ids)
    assert result.reasons[0].code in {"contact_address", "client_domain"}  # the headline says why
    planted = [r for r in result.reasons if r.code == "contact_address" and r.detail.startswith(f"{address} ")]
    assert {ref.contact_id for ref in refs} <= directory_ids(planted)
    assert not {"no_known_participant", "internal_only", "excluded_folder", "draft"} & {r.code for r in result.reasons}
    # And the same mail in junk, or as a draft, is excluded: the oracle is about the rules, not a constant.
    assert decide(replace(message, folder="junkemail"), OWNER_A, directory).decision is Decision.EXCLUDED
    assert decide(replace(message, is_draft=True), OWNER_A, directory).decision is Decision.EXCLUDED


def directory_ids(reasons: list[Reason]) -> set[str]:
    return {r.detail.split(" is an address of contact ")[1].split(",")[0] for r in reasons}


@settings(max_examples=400, deadline=None)
@given(message=messages(), directory=directories())
def test_decide_agrees_with_an_independent_model_of_the_rules(
    message: MailMessage, directory: DirectorySnapshot
) -> None:
    decision, contacts, clients = _model(message, directory)
    result = decide(message, OWNER_A, directory)
    assert (result.decision, set(result.contact_ids), set(result.client_ids)) == (decision, contacts, clients)
    codes = [r.code for r in result.reasons]
    if decision is Decision.MATCHED:
        assert codes[0] == ("contact_address" if contacts else "client_domain")
        assert contacts == directory_ids([r for r in result.reasons if r.code == "contact_address"])


def test_the_model_finds_matches_often_enough_to_mean_something() -> None:
    """Guards the oracle itself: a generator that (after a change) rarely produces matchable mail
    would make the agreement test vacuous for MATCHED. Derandomized: it measures the generator's bias, and
    random draws gave 36 to 82 matches in 300 (15 runs), so a fixed floor failed now and then by chance."""
    matched = 0

    @settings(max_examples=300, deadline=None, database=None, derandomize=True)
    @given(message=messages(), directory=directories())
    def count(message: MailMessage, directory: DirectorySnapshot) -> None:
        nonlocal matched
        matched += _model(message, directory)[0] is Decision.MATCHED

    count()
    assert matched >= 30, matched

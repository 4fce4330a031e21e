"""A batch's union snapshot, narrowed to one message's addresses, is what a snapshot of that message alone holds,
so deciding a batch together gives every message the decision it gets alone."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from services.core.application.matching import narrowed
from services.core.domain.matching import addresses_to_look_up, decide
from services.core.domain.model import ContactRef, DirectorySnapshot, EmailAddress, MailboxOwner, MailMessage

DOMAINS = ["client.example", "other.example", "own.example"]
ADDRESSES = [f"{name}@{domain}" for name in ("ana", "bo", "cy") for domain in DOMAINS]

UNION = DirectorySnapshot(
    account_id="acct",
    contacts_by_address={"ana@client.example": frozenset({ContactRef("c1", "k1")}),
                         "bo@other.example": frozenset({ContactRef("c2", None)})},
    colleague_addresses=frozenset({"cy@own.example", "bo@own.example"}),
    clients_by_domain={"client.example": frozenset({"k1"}), "other.example": frozenset({"k2"})},
    blocked_addresses=frozenset({"cy@client.example"}),
    blocked_domains=frozenset({"other.example"}),
    domain_matching=True,
)


def _alone(addresses: frozenset[str]) -> DirectorySnapshot:
    """What loading a snapshot for just these addresses (and their domains) returns."""
    domains = {a.rpartition("@")[2] for a in addresses}
    return DirectorySnapshot(
        account_id="acct",
        contacts_by_address={a: r for a, r in UNION.contacts_by_address.items() if a in addresses},
        colleague_addresses=frozenset(a for a in UNION.colleague_addresses if a in addresses),
        clients_by_domain={d: c for d, c in UNION.clients_by_domain.items() if d in domains},
        blocked_addresses=frozenset(a for a in UNION.blocked_addresses if a in addresses),
        blocked_domains=frozenset(d for d in UNION.blocked_domains if d in domains),
        domain_matching=True,
    )


def test_narrowing_keeps_exactly_the_messages_part():
    mine = frozenset({"ana@client.example", "cy@own.example"})
    assert narrowed(UNION, mine) == _alone(mine)
    assert narrowed(UNION, mine).blocked_domains == frozenset()
    assert narrowed(UNION, frozenset()) == _alone(frozenset())


@given(sender=st.sampled_from(ADDRESSES), recipients=st.lists(st.sampled_from(ADDRESSES), max_size=4))
def test_a_message_decided_on_the_narrowed_union_gets_its_decision_alone(sender, recipients):
    message = MailMessage("m1", "<m1@x>", "conv", "Hi", "inbox", False, None, None, EmailAddress(sender, ""), None,
                          tuple(EmailAddress(r, "") for r in recipients))
    owner = MailboxOwner("u1", "acct", frozenset({"ana@own.example"}))
    wanted = addresses_to_look_up(message, owner)
    assert decide(message, owner, narrowed(UNION, wanted)) == decide(message, owner, _alone(wanted))

"""The matching rules of docs/design.md#matching, one table row per rule and reason code."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import pytest

from services.core.domain.matching import (
    EXCLUDED_FOLDERS,
    addresses_to_look_up,
    decide,
    direction_of,
    is_excluded,
    participants_of,
)
from services.core.domain.model import (
    ContactRef,
    Decision,
    Direction,
    DirectorySnapshot,
    EmailAddress,
    MailboxOwner,
    MailMessage,
    Participant,
    Role,
)
from services.core.domain.reasons import DESCRIPTIONS, ReasonCode, describe, not_seen

ACCOUNT = "acc-1"
ME = "me@us.example"
MY_ALIAS = "me.alias@us.example"
COLLEAGUE = "colleague@us.example"
JANE = "jane@acme.example"  # contact c-jane of client k-acme (primary address)
JANE_2 = "jane.doe@acme-mail.example"  # secondary address of the same contact
SOLO = "solo@free.example"  # contact c-solo without a client
SHARED = "shared@partners.example"  # two contacts of two clients
IDN_CONTACT = "info@xn--bcher-kva.example"  # contact c-idn of client k-books (bücher.example)
STRANGER = "stranger@unknown.example"
BOB_AT_ACME = "bob@acme.example"  # no contact; acme.example is client k-acme's domain
SPAMMER = "spam@spam.example"  # blocked domain
X500 = "/O=EXCHANGELABS/OU=EXCHANGE ADMINISTRATIVE GROUP (FYDIBOHF23SPDLT)/CN=RECIPIENTS/CN=abc-jane"

OWNER = MailboxOwner(user_id="u-1", account_id=ACCOUNT, addresses=frozenset({ME, MY_ALIAS}))


def directory(**overrides: Any) -> DirectorySnapshot:
    base: dict[str, Any] = {
        "account_id": ACCOUNT,
        "contacts_by_address": {
            JANE: frozenset({ContactRef("c-jane", "k-acme")}),
            JANE_2: frozenset({ContactRef("c-jane", "k-acme")}),
            SOLO: frozenset({ContactRef("c-solo", None)}),
            SHARED: frozenset({ContactRef("c-s2", "k-zeta"), ContactRef("c-s1", "k-alpha")}),
            IDN_CONTACT: frozenset({ContactRef("c-idn", "k-books")}),
        },
        "colleague_addresses": frozenset({ME, MY_ALIAS, COLLEAGUE}),
        "clients_by_domain": {"acme.example": frozenset({"k-acme"}), "acme-mail.example": frozenset({"k-acme"})},
        "blocked_addresses": frozenset(),
        "blocked_domains": frozenset({"spam.example"}),
        "domain_matching": False,
    }
    base.update(overrides)
    return DirectorySnapshot(**base)


def ea(address: str, name: str = "") -> EmailAddress:
    return EmailAddress(address=address, name=name)


def message(
    from_: str | None = JANE,
    to: tuple[str, ...] = (ME,),
    *,
    sender: str | None = None,
    cc: tuple[str, ...] = (),
    bcc: tuple[str, ...] = (),
    reply_to: tuple[str, ...] = (),
    folder: str = "inbox",
    is_draft: bool = False,
) -> MailMessage:
    return MailMessage(
        message_id="m-1",
        internet_message_id="<m-1@acme.example>",
        conversation_id="conv-1",
        subject="Renewal",
        folder=folder,
        is_draft=is_draft,
        received_at=None,
        sent_at=None,
        from_=ea(from_) if from_ is not None else None,
        sender=ea(sender) if sender is not None else None,
        to=tuple(map(ea, to)),
        cc=tuple(map(ea, cc)),
        bcc=tuple(map(ea, bcc)),
        reply_to=tuple(map(ea, reply_to)),
    )


@dataclass(frozen=True)
class Case:
    id: str
    message: MailMessage
    decision: Decision
    codes: tuple[str, ...]  # reason codes, in order
    direction: Direction = Direction.INBOUND
    contact_ids: tuple[str, ...] = ()
    client_ids: tuple[str, ...] = ()
    directory: dict[str, Any] = field(default_factory=dict)


C = ReasonCode
IN, OUT = C.DIRECTION_INBOUND, C.DIRECTION_OUTBOUND

HEAD_CONTACT = (C.CONTACT_ADDRESS, C.OWNER_EXCLUDED)
INTERNAL = (C.INTERNAL_ONLY, C.COLLEAGUE_EXCLUDED, C.OWNER_EXCLUDED)
UNKNOWN = (C.NO_KNOWN_PARTICIPANT, C.UNKNOWN_ADDRESS, C.OWNER_EXCLUDED)
JANE_IDS: dict[str, Any] = {"contact_ids": ("c-jane",), "client_ids": ("k-acme",)}

# Reasons come headline first (exclusion, matches, or why nothing matched), then blocked, unknown,
# colleague, owner and ignored participants (each sorted by address), and the direction last.
CASES = [
    # --- contacts -------------------------------------------------------------------------------
    Case("inbound_from_contact", message(JANE, (ME,)), Decision.MATCHED, (*HEAD_CONTACT, IN), **JANE_IDS),
    Case("outbound_to_contact", message(ME, (JANE,)), Decision.MATCHED, (*HEAD_CONTACT, OUT),
         Direction.OUTBOUND, **JANE_IDS),
    Case("contact_matched_case_insensitively", message(ME, ("JANE@ACME.Example",)), Decision.MATCHED,
         (*HEAD_CONTACT, OUT), Direction.OUTBOUND, **JANE_IDS),
    Case("contact_in_display_name_form", message(ME, ('"Jane, Doe" <Jane@Acme.example>',)), Decision.MATCHED,
         (*HEAD_CONTACT, OUT), Direction.OUTBOUND, **JANE_IDS),
    Case("contact_secondary_address", message(JANE_2, (ME,)), Decision.MATCHED, (*HEAD_CONTACT, IN), **JANE_IDS),
    Case("contact_primary_and_secondary_one_contact", message(JANE, (ME,), cc=(JANE_2,)), Decision.MATCHED,
         (C.CONTACT_ADDRESS, *HEAD_CONTACT, IN), **JANE_IDS),
    Case("contact_without_client", message(SOLO, (ME,)), Decision.MATCHED, (*HEAD_CONTACT, IN),
         contact_ids=("c-solo",)),
    Case("address_of_two_contacts_two_clients", message(SHARED, (ME,)), Decision.MATCHED,
         (C.CONTACT_ADDRESS, *HEAD_CONTACT, IN), contact_ids=("c-s1", "c-s2"), client_ids=("k-alpha", "k-zeta")),
    Case("several_contacts_sorted_unique", message(SOLO, (ME, SHARED, JANE), cc=(JANE, JANE_2)),
         Decision.MATCHED, (*[C.CONTACT_ADDRESS] * 4, *HEAD_CONTACT, IN),
         contact_ids=("c-jane", "c-s1", "c-s2", "c-solo"), client_ids=("k-acme", "k-alpha", "k-zeta")),
    Case("contact_in_cc", message(COLLEAGUE, (ME,), cc=(JANE,)), Decision.MATCHED,
         (C.CONTACT_ADDRESS, C.COLLEAGUE_EXCLUDED, C.OWNER_EXCLUDED, IN), **JANE_IDS),
    Case("contact_as_sender", message(COLLEAGUE, (ME,), sender=JANE), Decision.MATCHED,
         (C.CONTACT_ADDRESS, C.COLLEAGUE_EXCLUDED, C.OWNER_EXCLUDED, IN), **JANE_IDS),
    Case("contact_in_reply_to", message(COLLEAGUE, (ME,), reply_to=(JANE,)), Decision.MATCHED,
         (C.CONTACT_ADDRESS, C.COLLEAGUE_EXCLUDED, C.OWNER_EXCLUDED, IN), **JANE_IDS),
    Case("contact_in_bcc_of_sent_mail", message(ME, (COLLEAGUE,), bcc=(JANE,)), Decision.MATCHED,
         (C.CONTACT_ADDRESS, C.COLLEAGUE_EXCLUDED, C.OWNER_EXCLUDED, OUT), Direction.OUTBOUND, **JANE_IDS),
    Case("bcc_of_received_mail_ignored", message(COLLEAGUE, (ME,), bcc=(JANE,)), Decision.NOT_MATCHED,
         (*INTERNAL, IN)),
    Case("idn_contact_matches_unicode_form", message("Info@Bücher.example", (ME,)), Decision.MATCHED,
         (*HEAD_CONTACT, IN), contact_ids=("c-idn",), client_ids=("k-books",)),
    Case("contact_plus_tag_is_another_address", message("jane+news@acme.example", (ME,)),
         Decision.NOT_MATCHED, (*UNKNOWN, IN)),
    # --- owner, aliases, colleagues -----------------------------------------------------------
    Case("internal_only_owner_to_colleague", message(ME, (COLLEAGUE,)), Decision.NOT_MATCHED,
         (*INTERNAL, OUT), Direction.OUTBOUND),
    Case("internal_only_colleague_to_owner", message(COLLEAGUE, (ME,)), Decision.NOT_MATCHED, (*INTERNAL, IN)),
    Case("internal_only_note_to_self", message(ME, (MY_ALIAS,)), Decision.NOT_MATCHED,
         (C.INTERNAL_ONLY, C.OWNER_EXCLUDED, C.OWNER_EXCLUDED, OUT), Direction.OUTBOUND),
    Case("alias_sender_is_outbound", message("Me.Alias@US.example", (JANE,)), Decision.MATCHED,
         (*HEAD_CONTACT, OUT), Direction.OUTBOUND, **JANE_IDS),
    Case("owner_plus_address_is_owner", message(JANE, ("me+crm@us.example",)), Decision.MATCHED,
         (*HEAD_CONTACT, IN), **JANE_IDS),
    Case("owner_plus_address_sender_is_outbound", message("me+crm@us.example", (COLLEAGUE,)),
         Decision.NOT_MATCHED, (*INTERNAL, OUT), Direction.OUTBOUND),
    Case("colleague_listed_as_contact_never_matches", message(COLLEAGUE, (ME,)), Decision.NOT_MATCHED,
         (*INTERNAL, IN), directory={"contacts_by_address": {COLLEAGUE: frozenset({ContactRef("c-x", "k-x")})}}),
    Case("owner_listed_as_contact_never_matches", message(ME, (MY_ALIAS,)), Decision.NOT_MATCHED,
         (C.INTERNAL_ONLY, C.OWNER_EXCLUDED, C.OWNER_EXCLUDED, OUT), Direction.OUTBOUND,
         directory={"contacts_by_address": {ME: frozenset({ContactRef("c-x", "k-x")})}}),
    # --- blocklists ---------------------------------------------------------------------------
    Case("blocklisted_address_only", message(JANE, (ME,)), Decision.NOT_MATCHED,
         (C.NO_KNOWN_PARTICIPANT, C.BLOCKLISTED_ADDRESS, C.OWNER_EXCLUDED, IN),
         directory={"blocked_addresses": frozenset({JANE})}),
    Case("blocklisted_address_other_contact_matches", message(JANE, (ME,), cc=(SOLO,)), Decision.MATCHED,
         (C.CONTACT_ADDRESS, C.BLOCKLISTED_ADDRESS, C.OWNER_EXCLUDED, IN), contact_ids=("c-solo",),
         directory={"blocked_addresses": frozenset({JANE})}),
    Case("blocklisted_domain", message(SPAMMER, (ME,)), Decision.NOT_MATCHED,
         (C.NO_KNOWN_PARTICIPANT, C.BLOCKLISTED_DOMAIN, C.OWNER_EXCLUDED, IN)),
    Case("blocklisted_domain_even_for_a_contact", message(JANE, (ME,)), Decision.NOT_MATCHED,
         (C.NO_KNOWN_PARTICIPANT, C.BLOCKLISTED_DOMAIN, C.OWNER_EXCLUDED, IN),
         directory={"blocked_domains": frozenset({"Acme.Example"})}),
    Case("blocklisted_domain_beats_client_domain", message(BOB_AT_ACME, (ME,)), Decision.NOT_MATCHED,
         (C.NO_KNOWN_PARTICIPANT, C.BLOCKLISTED_DOMAIN, C.OWNER_EXCLUDED, IN),
         directory={"domain_matching": True, "blocked_domains": frozenset({"acme.example"})}),
    # --- client domains -----------------------------------------------------------------------
    Case("client_domain_when_enabled", message(BOB_AT_ACME, (ME,)), Decision.MATCHED,
         (C.CLIENT_DOMAIN, C.OWNER_EXCLUDED, IN), client_ids=("k-acme",), directory={"domain_matching": True}),
    Case("client_domain_ignored_when_disabled", message(BOB_AT_ACME, (ME,)), Decision.NOT_MATCHED,
         (*UNKNOWN, IN)),
    Case("client_domain_no_subdomains", message("bob@eu.acme.example", (ME,)), Decision.NOT_MATCHED,
         (*UNKNOWN, IN), directory={"domain_matching": True}),
    Case("contact_and_client_domain_together", message(BOB_AT_ACME, (ME,), cc=(SOLO,)), Decision.MATCHED,
         (C.CONTACT_ADDRESS, C.CLIENT_DOMAIN, C.OWNER_EXCLUDED, IN), contact_ids=("c-solo",),
         client_ids=("k-acme",), directory={"domain_matching": True}),
    Case("contact_address_wins_over_its_domain", message(JANE, (ME,)), Decision.MATCHED, (*HEAD_CONTACT, IN),
         directory={"domain_matching": True, "clients_by_domain": {"acme.example": frozenset({"k-other"})}},
         **JANE_IDS),
    Case("client_domain_two_clients", message(BOB_AT_ACME, (ME,)), Decision.MATCHED,
         (C.CLIENT_DOMAIN, C.CLIENT_DOMAIN, C.OWNER_EXCLUDED, IN), client_ids=("k-acme", "k-b"),
         directory={"domain_matching": True, "clients_by_domain": {"acme.example": frozenset({"k-b", "k-acme"})}}),
    # --- nothing known ------------------------------------------------------------------------
    Case("no_known_participant", message(STRANGER, (ME,)), Decision.NOT_MATCHED, (*UNKNOWN, IN)),
    Case("no_participants_at_all", message(None, ()), Decision.NOT_MATCHED, (C.NO_PARTICIPANTS, IN)),
    Case("only_unusable_addresses", message(X500, ("Undisclosed recipients:;",)), Decision.NOT_MATCHED,
         (C.NO_PARTICIPANTS, C.IGNORED_ADDRESS, C.IGNORED_ADDRESS, IN)),
    Case("x500_sender_ignored_contact_still_matches", message(X500, (ME,), cc=(JANE,)), Decision.MATCHED,
         (*HEAD_CONTACT, C.IGNORED_ADDRESS, IN), **JANE_IDS),
    # --- excluded -----------------------------------------------------------------------------
    *[
        Case(f"excluded_folder_{folder}", message(JANE, (ME,), folder=folder), Decision.EXCLUDED,
             (C.EXCLUDED_FOLDER, IN))
        for folder in ("junkemail", "deleteditems", "outbox", "JunkEmail", "syncissues", "conversationhistory")
    ],
    Case("excluded_folder_drafts", message(ME, (JANE,), folder="drafts"), Decision.EXCLUDED,
         (C.EXCLUDED_FOLDER, OUT), Direction.OUTBOUND),
    Case("draft_in_drafts_folder", message(ME, (JANE,), folder="drafts", is_draft=True), Decision.EXCLUDED,
         (C.EXCLUDED_FOLDER, C.DRAFT, OUT), Direction.OUTBOUND),
    Case("draft_in_other_folder", message(ME, (JANE,), folder="other", is_draft=True), Decision.EXCLUDED,
         (C.DRAFT, OUT), Direction.OUTBOUND),
    *[
        Case(f"not_excluded_folder_{folder}", message(JANE, (ME,), folder=folder), Decision.MATCHED,
             (*HEAD_CONTACT, IN), **JANE_IDS)
        for folder in ("inbox", "sentitems", "archive", "scheduled", "clutter", "other")
    ],
]  # fmt: skip

HEADLINES = {
    Decision.EXCLUDED: {C.EXCLUDED_FOLDER, C.DRAFT},
    Decision.MATCHED: {C.CONTACT_ADDRESS, C.CLIENT_DOMAIN},
    Decision.NOT_MATCHED: {C.NO_PARTICIPANTS, C.INTERNAL_ONLY, C.NO_KNOWN_PARTICIPANT},
}


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_decide(case: Case) -> None:
    result = decide(case.message, OWNER, directory(**case.directory))
    assert result.decision is case.decision
    assert tuple(r.code for r in result.reasons) == case.codes
    assert result.direction is case.direction
    assert result.contact_ids == case.contact_ids
    assert result.client_ids == case.client_ids
    assert all(r.detail for r in result.reasons)
    assert result.reasons[0].code in HEADLINES[case.decision]  # the first reason is the headline


def test_every_matching_reason_code_is_exercised() -> None:
    seen = {r.code for case in CASES for r in decide(case.message, OWNER, directory(**case.directory)).reasons}
    # not_seen is the diagnose endpoint's; automated and user_excluded need an account setting and an
    # owner's never_log list: tests/unit/test_engagement_quality.py exercises them.
    assert set(ReasonCode) - seen == {ReasonCode.NOT_SEEN, ReasonCode.AUTOMATED, ReasonCode.USER_EXCLUDED}


def test_reasons_name_the_address() -> None:
    result = decide(message(JANE, (ME,), cc=(STRANGER, SPAMMER)), OWNER, directory())
    details = {r.code: r.detail for r in result.reasons}
    assert JANE in details[ReasonCode.CONTACT_ADDRESS]
    assert "c-jane" in details[ReasonCode.CONTACT_ADDRESS]
    assert "k-acme" in details[ReasonCode.CONTACT_ADDRESS]
    assert ME in details[ReasonCode.OWNER_EXCLUDED]
    assert STRANGER in details[ReasonCode.UNKNOWN_ADDRESS]
    assert SPAMMER in details[ReasonCode.BLOCKLISTED_DOMAIN]
    assert "spam.example" in details[ReasonCode.BLOCKLISTED_DOMAIN]
    assert JANE in details[ReasonCode.DIRECTION_INBOUND]


def test_excluded_folder_detail_uses_outlook_names() -> None:
    result = decide(message(folder="junkemail"), OWNER, directory())
    assert result.reasons[0].detail.startswith("The message is in Junk Email;")


def test_no_known_participant_lists_the_outsiders() -> None:
    result = decide(message(STRANGER, (ME,), cc=("other@unknown.example",)), OWNER, directory())
    assert result.reasons[0].code == ReasonCode.NO_KNOWN_PARTICIPANT
    assert "other@unknown.example, stranger@unknown.example" in result.reasons[0].detail


def test_owner_plus_address_reason_says_so() -> None:
    result = decide(message(JANE, ("me+crm@us.example",)), OWNER, directory())
    owner_reason = next(r for r in result.reasons if r.code == ReasonCode.OWNER_EXCLUDED)
    assert "plus-address" in owner_reason.detail


def test_snapshot_of_another_account_is_refused() -> None:
    with pytest.raises(ValueError, match="tenants never mix"):
        decide(message(), OWNER, directory(account_id="acc-2"))


def test_snapshot_of_another_account_is_refused_even_for_excluded_mail() -> None:
    with pytest.raises(ValueError, match="tenants never mix"):
        decide(message(folder="junkemail"), OWNER, directory(account_id="acc-2"))


def test_snapshot_keys_are_compared_after_normalisation() -> None:
    snap = directory(
        contacts_by_address={"Jane@ACME.example": frozenset({ContactRef("c-jane", "k-acme")})},
        colleague_addresses=frozenset({"Colleague@US.example"}),
        clients_by_domain={"Bücher.Example": frozenset({"k-books"})},
        domain_matching=True,
    )
    result = decide(message(JANE, (ME,), cc=(COLLEAGUE, "sales@xn--bcher-kva.example")), OWNER, snap)
    assert result.contact_ids == ("c-jane",)
    assert result.client_ids == ("k-acme", "k-books")
    assert ReasonCode.COLLEAGUE_EXCLUDED in {r.code for r in result.reasons}


def test_owner_addresses_are_normalised_defensively() -> None:
    owner = replace(OWNER, addresses=frozenset({"Me@US.example"}))
    assert direction_of(message(ME, (JANE,)), owner) is Direction.OUTBOUND


def test_empty_contact_refs_are_not_a_match() -> None:
    result = decide(message(STRANGER, (ME,)), OWNER, directory(contacts_by_address={STRANGER: frozenset()}))
    assert result.decision is Decision.NOT_MATCHED


def test_result_carries_participants() -> None:
    msg = message(JANE, (ME,))
    assert decide(msg, OWNER, directory()).participants == participants_of(msg, OWNER)


# --- direction ----------------------------------------------------------------------------------

DIRECTIONS = [
    ("from_owner", message(ME, (JANE,)), Direction.OUTBOUND),
    ("from_owner_uppercase", message("ME@US.EXAMPLE", (JANE,)), Direction.OUTBOUND),
    ("from_alias", message(MY_ALIAS, (JANE,)), Direction.OUTBOUND),
    ("from_owner_plus_tag", message("me+x@us.example", (JANE,)), Direction.OUTBOUND),
    ("from_contact", message(JANE, (ME,)), Direction.INBOUND),
    ("from_colleague", message(COLLEAGUE, (ME,)), Direction.INBOUND),
    ("no_from_sender_owner", message(None, (JANE,), sender=ME), Direction.OUTBOUND),
    ("unusable_from_sender_owner", message(X500, (JANE,), sender=ME), Direction.OUTBOUND),
    ("from_wins_over_sender", message(COLLEAGUE, (JANE,), sender=ME), Direction.INBOUND),
    ("no_from_no_sender", message(None, (ME,)), Direction.INBOUND),
    ("owner_only_recipient", message(STRANGER, (ME,)), Direction.INBOUND),
]


@pytest.mark.parametrize(("msg", "expected"), [d[1:] for d in DIRECTIONS], ids=[d[0] for d in DIRECTIONS])
def test_direction_of(msg: MailMessage, expected: Direction) -> None:
    assert direction_of(msg, OWNER) is expected
    reason = decide(msg, OWNER, directory()).reasons[-1]
    expected_code = ReasonCode.DIRECTION_OUTBOUND if expected is Direction.OUTBOUND else ReasonCode.DIRECTION_INBOUND
    assert reason.code == expected_code


# --- participants -------------------------------------------------------------------------------


def test_participants_roles_order_normalisation_and_dedup() -> None:
    msg = MailMessage(
        message_id="m",
        internet_message_id="<m@x>",
        conversation_id="c",
        subject="s",
        folder="sentitems",
        is_draft=False,
        received_at=None,
        sent_at=None,
        from_=ea("Me@US.example", "Me"),
        sender=ea(ME),
        to=(ea("Jane@Acme.example"), ea(JANE, "Jane"), ea(STRANGER, "S"), ea(X500, "Exchange")),
        cc=(ea(JANE, "Jane cc"),),
        bcc=(ea(SOLO, "Solo"), ea(SOLO)),
        reply_to=(ea("", "nobody"),),
    )
    assert participants_of(msg, OWNER) == (
        Participant(ME, "Me", Role.FROM),
        Participant(ME, "", Role.SENDER),
        Participant(JANE, "Jane", Role.TO),  # first non-empty name of the duplicates
        Participant(STRANGER, "S", Role.TO),
        Participant(JANE, "Jane cc", Role.CC),
        Participant(SOLO, "Solo", Role.BCC),
    )


def test_bcc_only_for_mail_the_owner_sent() -> None:
    inbound = message(JANE, (ME,), bcc=(SOLO,))
    outbound = message(ME, (JANE,), bcc=(SOLO,))
    assert Role.BCC not in {p.role for p in participants_of(inbound, OWNER)}
    assert Participant(SOLO, "", Role.BCC) in participants_of(outbound, OWNER)


def test_reply_to_is_a_participant() -> None:
    assert Participant(JANE, "", Role.REPLY_TO) in participants_of(message(ME, (ME,), reply_to=(JANE,)), OWNER)


# --- addresses to look up -----------------------------------------------------------------------


def test_addresses_to_look_up_excludes_owner_and_unusable() -> None:
    msg = message(
        "Me+tag@us.example", ("JANE@acme.example", MY_ALIAS, X500), cc=(COLLEAGUE,), bcc=(SOLO,), reply_to=(ME,)
    )
    assert addresses_to_look_up(msg, OWNER) == frozenset({JANE, COLLEAGUE, SOLO})


def test_addresses_to_look_up_skips_received_bcc() -> None:
    assert addresses_to_look_up(message(JANE, (ME,), bcc=(SOLO,)), OWNER) == frozenset({JANE})


@pytest.mark.parametrize(
    "msg",
    [message(folder="junkemail"), message(folder="Drafts"), message(folder="other", is_draft=True)],
    ids=["junk", "drafts_folder", "draft"],
)
def test_addresses_to_look_up_empty_for_excluded_mail(msg: MailMessage) -> None:
    assert addresses_to_look_up(msg, OWNER) == frozenset()


def test_addresses_to_look_up_covers_what_decide_reads() -> None:
    """A snapshot restricted to the looked-up addresses gives the same decision as a full one."""
    msg = message(JANE, (ME, STRANGER), cc=(SOLO, COLLEAGUE))
    full = directory()
    wanted = addresses_to_look_up(msg, OWNER)
    restricted = directory(
        contacts_by_address={a: r for a, r in full.contacts_by_address.items() if a in wanted},
        colleague_addresses=full.colleague_addresses & wanted,
    )
    assert decide(msg, OWNER, restricted) == decide(msg, OWNER, full)


# --- folders and catalogue ----------------------------------------------------------------------


def test_excluded_folders() -> None:
    assert {"drafts", "junkemail", "deleteditems", "outbox"} <= EXCLUDED_FOLDERS
    assert not {"inbox", "sentitems", "archive", "scheduled", "clutter", "other"} & EXCLUDED_FOLDERS
    assert is_excluded("JunkEmail")
    assert not is_excluded("Inbox")


def test_reason_catalogue() -> None:
    assert set(DESCRIPTIONS) == set(ReasonCode)
    for code in ReasonCode:
        assert code.value == code.value.lower()
        assert code.value.replace("_", "").isalpha()
        assert describe(code) == describe(code.value)
    assert describe("internal_only") == "Every participant is you or a colleague at your company."
    with pytest.raises(ValueError):
        describe("no_such_code")


def test_reason_codes_are_stable() -> None:
    """Codes are an API: this list only ever grows."""
    assert {c.value for c in ReasonCode} >= {
        "excluded_folder", "draft", "owner_excluded", "colleague_excluded", "blocklisted_address",
        "blocklisted_domain", "ignored_address", "contact_address", "client_domain", "unknown_address",
        "no_participants", "internal_only", "no_known_participant", "direction_outbound",
        "direction_inbound", "not_seen",
    }  # fmt: skip


def test_not_seen_reason() -> None:
    reason = not_seen("<m-1@acme.example>")
    assert reason.code == ReasonCode.NOT_SEEN
    assert "<m-1@acme.example>" in reason.detail


def test_one_folder_catalog_every_excluded_folder_is_resolved_and_never_polled():
    """The matcher resolves every folder the rules exclude (else its mail would count as "other" and could
    become an engagement), and the poll skips every one of them: one catalog, three users."""
    from services.core.domain.matching import EXCLUDED_FOLDERS
    from services.matcher.folders import WELL_KNOWN
    from services.renewer.delta import EXCLUDED

    assert set(WELL_KNOWN) >= EXCLUDED_FOLDERS
    assert set(EXCLUDED) == EXCLUDED_FOLDERS
    assert {"syncissues", "conversationhistory", "recoverableitemsdeletions"} <= EXCLUDED_FOLDERS
    assert {"inbox", "sentitems"} <= set(WELL_KNOWN) - EXCLUDED_FOLDERS

"""The reason codes of matching decisions and their plain-words explanations.

Codes are an API (the diagnose endpoint returns them and clients may switch on them): they are
short snake_case strings that never change meaning; new codes may be added, none renamed.

Each code has a general explanation (``describe``) for catalogues and help pages, and a builder
that produces the ``Reason`` for one message, whose ``detail`` names the address, folder or domain
concerned in words a user understands.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from enum import StrEnum
from types import MappingProxyType

from services.core.domain.model import Reason

__all__ = [
    "DESCRIPTIONS",
    "FOLDER_NAMES",
    "ReasonCode",
    "automated",
    "blocklisted_address",
    "blocklisted_domain",
    "client_domain",
    "colleague_excluded",
    "contact_address",
    "describe",
    "direction_inbound",
    "direction_outbound",
    "draft",
    "excluded_folder",
    "ignored_address",
    "internal_only",
    "no_known_participant",
    "no_participants",
    "not_seen",
    "owner_excluded",
    "rank",
    "unknown_address",
    "user_excluded",
]


class ReasonCode(StrEnum):
    """Declaration order is the order in which a decision lists its reasons: the headline (why the
    message was excluded, matched or not matched) first, then per-participant details, and the
    direction last. ``rank`` gives that order."""

    # headlines
    NOT_SEEN = "not_seen"  # the diagnose endpoint: the message never reached matching
    EXCLUDED_FOLDER = "excluded_folder"
    DRAFT = "draft"
    AUTOMATED = "automated"  # bulk or machine mail, with the account's exclude_automated on
    CONTACT_ADDRESS = "contact_address"
    CLIENT_DOMAIN = "client_domain"
    NO_PARTICIPANTS = "no_participants"
    INTERNAL_ONLY = "internal_only"
    NO_KNOWN_PARTICIPANT = "no_known_participant"
    # participants that did not match, and why
    BLOCKLISTED_ADDRESS = "blocklisted_address"
    BLOCKLISTED_DOMAIN = "blocklisted_domain"
    USER_EXCLUDED = "user_excluded"  # on the mailbox owner's own never_log list
    UNKNOWN_ADDRESS = "unknown_address"
    COLLEAGUE_EXCLUDED = "colleague_excluded"
    OWNER_EXCLUDED = "owner_excluded"
    IGNORED_ADDRESS = "ignored_address"
    # always present on a decided message
    DIRECTION_OUTBOUND = "direction_outbound"
    DIRECTION_INBOUND = "direction_inbound"


_RANK: Mapping[str, int] = MappingProxyType({code.value: i for i, code in enumerate(ReasonCode)})


def rank(code: ReasonCode | str) -> int:
    """Position of a code in a decision's list of reasons (unknown codes last)."""
    return _RANK.get(str(code), len(_RANK))


DESCRIPTIONS: Mapping[ReasonCode, str] = MappingProxyType(
    {
        ReasonCode.EXCLUDED_FOLDER: (
            "The message is in a folder that never creates engagements: junk email, deleted items, "
            "drafts, outbox, or Outlook's sync-issue and conversation-history folders."
        ),
        ReasonCode.DRAFT: "The message is a draft that has not been sent; drafts never create engagements.",
        ReasonCode.AUTOMATED: (
            "The message is bulk or machine mail (it carries List-Unsubscribe, List-Id, Precedence: bulk, list "
            "or junk, or Auto-Submitted other than no), and your company excludes automated mail."
        ),
        ReasonCode.USER_EXCLUDED: (
            "The address is on your own never-log list, so mail you share only with such addresses never "
            "becomes an engagement from your mailbox."
        ),
        ReasonCode.OWNER_EXCLUDED: ("The address is your own (your primary address or an alias), so it never matches."),
        ReasonCode.COLLEAGUE_EXCLUDED: ("The address belongs to a colleague at your company, so it never matches."),
        ReasonCode.BLOCKLISTED_ADDRESS: (
            "The address is on your company's blocklist, so it never creates engagements."
        ),
        ReasonCode.BLOCKLISTED_DOMAIN: (
            "The address is in a domain on your company's blocklist, so it never creates engagements."
        ),
        ReasonCode.IGNORED_ADDRESS: (
            "A participant has no usable email address (for example an internal Exchange X.500 "
            "address) and was ignored."
        ),
        ReasonCode.CONTACT_ADDRESS: "The address is the primary or a secondary address of a known contact.",
        ReasonCode.CLIENT_DOMAIN: "The address is in the email domain of a client (domain matching is on).",
        ReasonCode.UNKNOWN_ADDRESS: ("The address is not a known contact's address (nor in a client's domain)."),
        ReasonCode.NO_PARTICIPANTS: "The message has no participant with a usable email address.",
        ReasonCode.INTERNAL_ONLY: "Every participant is you or a colleague at your company.",
        ReasonCode.NO_KNOWN_PARTICIPANT: (
            "No participant outside your company is a known contact (or in a client's domain)."
        ),
        ReasonCode.DIRECTION_OUTBOUND: "You (or one of your aliases) sent this message.",
        ReasonCode.DIRECTION_INBOUND: "You received this message; someone else sent it.",
        ReasonCode.NOT_SEEN: (
            "mailsync has not seen this message: it has not arrived through notifications or the "
            "hourly sync yet, or it predates the connection and no back-sync covered it."
        ),
    }
)


def describe(code: ReasonCode | str) -> str:
    """The general plain-words explanation of a code. Raises ValueError for unknown codes."""
    return DESCRIPTIONS[ReasonCode(code)]


# Well-known folder names as Outlook shows them.
FOLDER_NAMES: Mapping[str, str] = MappingProxyType(
    {
        "inbox": "Inbox",
        "sentitems": "Sent Items",
        "drafts": "Drafts",
        "junkemail": "Junk Email",
        "deleteditems": "Deleted Items",
        "recoverableitemsdeletions": "Recoverable Items",
        "outbox": "Outbox",
        "archive": "Archive",
        "clutter": "Clutter",
        "scheduled": "Scheduled",
        "conversationhistory": "Conversation History",
        "syncissues": "Sync Issues",
        "conflicts": "Conflicts",
        "localfailures": "Local Failures",
        "serverfailures": "Server Failures",
    }
)


def _folder_name(folder: str) -> str:
    return FOLDER_NAMES.get(folder.lower(), folder)


def _join(addresses: Iterable[str]) -> str:
    return ", ".join(addresses)


def excluded_folder(folder: str) -> Reason:
    return Reason(
        ReasonCode.EXCLUDED_FOLDER,
        f"The message is in {_folder_name(folder)}; junk, deleted items, drafts and outbox "
        "(and Outlook's sync-issue and conversation-history folders) never create engagements.",
    )


def draft() -> Reason:
    return Reason(ReasonCode.DRAFT, "The message is a draft that has not been sent; drafts never create engagements.")


def automated(evidence: str) -> Reason:
    shown = evidence if len(evidence) <= 200 else evidence[:197] + "..."
    return Reason(
        ReasonCode.AUTOMATED,
        f"The message is bulk or machine mail ({shown}) and your company excludes automated mail, "
        "so it never creates engagements.",
    )


def user_excluded(address: str, entry: str) -> Reason:
    what = f"the domain {entry[1:]}" if entry.startswith("@") else entry
    return Reason(
        ReasonCode.USER_EXCLUDED,
        f"{address} is on your never-log list ({what}), so it never creates engagements from your mailbox.",
    )


def owner_excluded(address: str, via_plus_tag: bool = False) -> Reason:
    if via_plus_tag:
        detail = f"{address} is a plus-address of your own mailbox (Exchange delivers it to you), so it never matches."
    else:
        detail = f"{address} is your own address (your primary address or an alias), so it never matches."
    return Reason(ReasonCode.OWNER_EXCLUDED, detail)


def colleague_excluded(address: str) -> Reason:
    return Reason(
        ReasonCode.COLLEAGUE_EXCLUDED,
        f"{address} belongs to a colleague at your company, so it never matches.",
    )


def blocklisted_address(address: str) -> Reason:
    return Reason(
        ReasonCode.BLOCKLISTED_ADDRESS,
        f"{address} is on your company's blocklist, so it never creates engagements.",
    )


def blocklisted_domain(address: str, domain: str) -> Reason:
    return Reason(
        ReasonCode.BLOCKLISTED_DOMAIN,
        f"{address} is in the domain {domain}, which is on your company's blocklist, so it never creates engagements.",
    )


def ignored_address(raw: str) -> Reason:
    shown = raw if len(raw) <= 120 else raw[:117] + "..."
    return Reason(
        ReasonCode.IGNORED_ADDRESS,
        f"{shown!r} is not a usable email address (for example an internal Exchange X.500 address) and was ignored.",
    )


def contact_address(address: str, contact_id: str, client_id: str | None) -> Reason:
    owner = f"of client {client_id}" if client_id is not None else "who belongs to no client"
    return Reason(
        ReasonCode.CONTACT_ADDRESS,
        f"{address} is an address of contact {contact_id}, {owner}.",
    )


def client_domain(address: str, domain: str, client_id: str) -> Reason:
    return Reason(
        ReasonCode.CLIENT_DOMAIN,
        f"{address} is in {domain}, an email domain of client {client_id} (domain matching is on).",
    )


def unknown_address(address: str, domain_matching: bool) -> Reason:
    tail = " and its domain is not a client's domain" if domain_matching else ""
    return Reason(
        ReasonCode.UNKNOWN_ADDRESS,
        f"{address} is not the address of any known contact{tail}.",
    )


def no_participants() -> Reason:
    return Reason(ReasonCode.NO_PARTICIPANTS, "The message has no participant with a usable email address.")


def internal_only() -> Reason:
    return Reason(ReasonCode.INTERNAL_ONLY, "Every participant is you or a colleague at your company.")


def no_known_participant(addresses: Iterable[str], domain_matching: bool) -> Reason:
    listed = _join(addresses)
    what = "a known contact's address or in a client's domain" if domain_matching else "a known contact's address"
    if listed:
        detail = f"None of the participants outside your company ({listed}) is {what}."
    else:
        detail = "Every participant outside your company is blocklisted."
    return Reason(ReasonCode.NO_KNOWN_PARTICIPANT, detail)


def direction_outbound(sender: str) -> Reason:
    return Reason(ReasonCode.DIRECTION_OUTBOUND, f"You sent this message (from {sender}).")


def direction_inbound(sender: str | None) -> Reason:
    if sender is None:
        detail = "You received this message; it has no usable sender address."
    else:
        detail = f"You received this message from {sender}."
    return Reason(ReasonCode.DIRECTION_INBOUND, detail)


def not_seen(internet_message_id: str) -> Reason:
    return Reason(
        ReasonCode.NOT_SEEN,
        f"mailsync has not seen the message {internet_message_id}: it has not arrived through "
        "notifications or the hourly sync yet, or it predates the connection and no back-sync covered it.",
    )

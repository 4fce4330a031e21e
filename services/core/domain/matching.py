"""The matching rules (docs/design.md#matching): pure functions from a message to a decision.

The I/O layer calls ``addresses_to_look_up`` for a message, loads a ``DirectorySnapshot`` of the
message's account for exactly those addresses (and their domains), then calls ``decide``. Nothing
here does I/O, and the decision depends on neither address case, participant order nor duplicates.

Rules, in order:

1. The snapshot must belong to the owner's account (tenants never mix): otherwise ValueError.
2. A message in an excluded folder, or a draft, is EXCLUDED; so is bulk or machine mail
   (``message.automated_by``, read from its headers by ``services.core.domain.automated``) when the account
   excludes automated mail (``directory.exclude_automated``).
3. Participants: ``from``, ``sender``, ``to``, ``cc``, ``replyTo``, and ``bcc`` only for mail the
   owner sent; normalised (``services.core.domain.addresses``); unusable addresses are ignored.
4. Candidates are participants other than the owner (primary address, aliases and plus-addresses
   of them) and colleagues (any user of the account). None left: NOT_MATCHED ``internal_only``.
5. Blocklisted addresses and addresses in blocklisted domains are removed; they never match.
6. A candidate that is a known contact's address matches that contact and the contact's client.
   With domain matching on, a candidate that is not a contact address but is in a client's email
   domain (exact domain, no subdomains) matches that client.
7. The mailbox owner's own exclusions (``owner.never_log``: addresses and ``@domains``) are removed
   from this mailbox's candidates (``user_excluded``); other mailboxes' copies of the same email are
   decided with their owners' lists, so a colleague's copy can still make the engagement.
8. Anything matched: MATCHED. Otherwise, when a removed never-log address would have matched, the
   mail is EXCLUDED with ``user_excluded`` first; otherwise NOT_MATCHED ``no_known_participant``.

Every outcome carries reasons (``services.core.domain.reasons``): the headline first (the exclusion, the
matches, or why nothing matched), then one reason per participant that did not match, sorted by
code and address, and the direction reason always last. Reasons depend only on the normalised
addresses (``ignored_address`` alone quotes the raw text), so they too are independent of case,
order and duplicates.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import TypeVar

from services.core.domain import reasons as R
from services.core.domain.addresses import domain_of, normalize_address, normalize_domain, strip_plus_tag
from services.core.domain.model import (
    Decision,
    Direction,
    DirectorySnapshot,
    EmailAddress,
    MailboxOwner,
    MailMessage,
    MatchResult,
    Participant,
    Reason,
    Role,
)
from services.core.domain.never_log import excluded_by

T = TypeVar("T")

__all__ = [
    "EXCLUDED_FOLDERS",
    "addresses_to_look_up",
    "decide",
    "direction_of",
    "is_excluded",
    "participants_of",
]

# Well-known folders (Graph names, compared case-insensitively) whose mail never becomes an engagement.
EXCLUDED_FOLDERS = frozenset(
    {
        # docs/design.md#matching: not junk, deleted items, drafts or outbox (outbox mail is not sent yet; it is
        # seen again in sentitems once it is).
        "drafts",
        "junkemail",
        "deleteditems",
        "outbox",
        # The Recoverable Items folder holds mail deleted from Deleted Items: deleted is deleted.
        "recoverableitemsdeletions",
        # Sync Issues and its subfolders hold Outlook's conflict copies and sync-failure reports:
        # copies of mail that exists elsewhere, or system logs, never a conversation with a client.
        "syncissues",
        "conflicts",
        "localfailures",
        "serverfailures",
        # Conversation History holds Skype for Business / Teams chat transcripts, not email.
        "conversationhistory",
        # Not excluded, on purpose: "scheduled" (Outlook's snoozed mail: real received mail moved
        # out of the inbox until a chosen time), "clutter" and "archive" (real mail filed away),
        # "searchfolders" (virtual views; their messages live, and are judged, in real folders).
    }
)


def is_excluded(folder: str) -> bool:
    """True when mail in this well-known folder never creates engagements."""
    return folder.lower() in EXCLUDED_FOLDERS


def _owner_addresses(owner: MailboxOwner) -> frozenset[str]:
    # Defensive: the I/O layer should already pass normalised addresses (parse_proxy_addresses).
    normalised = (normalize_address(a) for a in owner.addresses)
    return frozenset(a for a in normalised if a is not None)


def _is_owner(address: str, owner_addresses: frozenset[str]) -> bool:
    return address in owner_addresses or strip_plus_tag(address) in owner_addresses


def _sender_address(message: MailMessage) -> str | None:
    """The normalised ``from`` address, or ``sender`` when ``from`` is missing or unusable."""
    for ea in (message.from_, message.sender):
        if ea is not None:
            addr = normalize_address(ea.address)
            if addr is not None:
                return addr
    return None


def _direction(message: MailMessage, owner_addresses: frozenset[str]) -> tuple[Direction, str | None]:
    sender = _sender_address(message)
    if sender is not None and _is_owner(sender, owner_addresses):
        return Direction.OUTBOUND, sender
    return Direction.INBOUND, sender


def direction_of(message: MailMessage, owner: MailboxOwner) -> Direction:
    """OUTBOUND when ``from`` (or, without a usable ``from``, ``sender``) is one of the owner's
    addresses, compared also after stripping a plus tag; INBOUND otherwise."""
    return _direction(message, _owner_addresses(owner))[0]


def _raw_participants(message: MailMessage, outbound: bool) -> Iterable[tuple[EmailAddress, Role]]:
    if message.from_ is not None:
        yield message.from_, Role.FROM
    if message.sender is not None:
        yield message.sender, Role.SENDER
    for ea in message.to:
        yield ea, Role.TO
    for ea in message.cc:
        yield ea, Role.CC
    if outbound:
        for ea in message.bcc:
            yield ea, Role.BCC
    for ea in message.reply_to:
        yield ea, Role.REPLY_TO


def _participants(message: MailMessage, outbound: bool) -> tuple[tuple[Participant, ...], tuple[str, ...]]:
    """Participants (deduplicated per address and role, in message order) and the ignored raw addresses."""
    order: list[tuple[str, Role]] = []
    names: dict[tuple[str, Role], str] = {}
    ignored: set[str] = set()
    for ea, role in _raw_participants(message, outbound):
        addr = normalize_address(ea.address)
        if addr is None:
            if ea.address.strip():
                ignored.add(ea.address.strip())
            continue
        key = (addr, role)
        name = ea.name.strip()
        if key not in names:
            order.append(key)
            names[key] = name
        elif not names[key] and name:
            names[key] = name  # keep the first non-empty display name
    participants = tuple(Participant(address=a, name=names[(a, r)], role=r) for a, r in order)
    return participants, tuple(sorted(ignored))


def participants_of(message: MailMessage, owner: MailboxOwner) -> tuple[Participant, ...]:
    """The message's participants: from, sender, to, cc, bcc (only when the owner sent it), reply-to.

    Addresses are normalised, unusable ones dropped, duplicates per (address, role) merged; the
    order is role by role as listed, then the message's own order.
    """
    direction, _ = _direction(message, _owner_addresses(owner))
    return _participants(message, direction is Direction.OUTBOUND)[0]


def addresses_to_look_up(message: MailMessage, owner: MailboxOwner) -> frozenset[str]:
    """The normalised addresses the I/O layer must load a DirectorySnapshot for.

    Every participant address except the owner's own; empty for an excluded message or draft,
    whose decision never reads the directory. The snapshot must also cover these addresses'
    domains (``domain_of``) in ``clients_by_domain`` and ``blocked_domains``.
    """
    if is_excluded(message.folder) or message.is_draft:
        return frozenset()
    owner_addresses = _owner_addresses(owner)
    return frozenset(p.address for p in participants_of(message, owner) if not _is_owner(p.address, owner_addresses))


def _normalised_addresses(addresses: Iterable[str]) -> frozenset[str]:
    normalised = (normalize_address(a) for a in addresses)
    return frozenset(a for a in normalised if a is not None)


def _normalised_domains(domains: Iterable[str]) -> frozenset[str]:
    normalised = (normalize_domain(d) for d in domains)
    return frozenset(d for d in normalised if d is not None)


def _normalised_keys(
    mapping: Mapping[str, frozenset[T]], normalize: Callable[[str], str | None]
) -> dict[str, frozenset[T]]:
    """Re-key a snapshot mapping by normalised keys (merging values of keys that become equal).

    The I/O layer should already key snapshots by normalised addresses and domains; this keeps
    the comparison case-insensitive even when it does not.
    """
    out: dict[str, frozenset[T]] = {}
    for key, values in mapping.items():
        norm = normalize(key)
        if norm is not None and values:
            out[norm] = out.get(norm, frozenset()) | values
    return out


def decide(message: MailMessage, owner: MailboxOwner, directory: DirectorySnapshot) -> MatchResult:
    """Apply the matching rules (see the module docstring) to one message."""
    if directory.account_id != owner.account_id:
        raise ValueError(
            f"directory snapshot of account {directory.account_id!r} used for a mailbox of account "
            f"{owner.account_id!r}: tenants never mix"
        )
    owner_addresses = _owner_addresses(owner)
    direction, sender = _direction(message, owner_addresses)
    if direction is Direction.OUTBOUND and sender is not None:
        direction_reason = R.direction_outbound(sender)
    else:
        direction_reason = R.direction_inbound(sender)
    participants, ignored = _participants(message, direction is Direction.OUTBOUND)

    def result(
        decision: Decision, found: list[Reason], contacts: Iterable[str] = (), clients: Iterable[str] = (),
        headline: Iterable[Reason] = (),
    ) -> MatchResult:
        ordered = sorted(found, key=lambda r: R.rank(r.code))  # stable: addresses stay sorted per code
        return MatchResult(
            decision=decision,
            reasons=(*headline, *ordered, direction_reason),
            direction=direction,
            participants=participants,
            contact_ids=tuple(sorted(set(contacts))),
            client_ids=tuple(sorted(set(clients))),
        )

    exclusions: list[Reason] = []
    if is_excluded(message.folder):
        exclusions.append(R.excluded_folder(message.folder))
    if message.is_draft:
        exclusions.append(R.draft())
    if directory.exclude_automated and message.automated_by:
        exclusions.append(R.automated(message.automated_by))
    if exclusions:
        return result(Decision.EXCLUDED, exclusions)

    found: list[Reason] = [R.ignored_address(raw) for raw in ignored]
    addresses = sorted({p.address for p in participants})
    if not addresses:
        return result(Decision.NOT_MATCHED, [*found, R.no_participants()])

    colleagues = _normalised_addresses(directory.colleague_addresses)
    candidates: list[str] = []
    for addr in addresses:
        if _is_owner(addr, owner_addresses):
            found.append(R.owner_excluded(addr, via_plus_tag=addr not in owner_addresses))
        elif addr in colleagues:
            found.append(R.colleague_excluded(addr))
        else:
            candidates.append(addr)
    if not candidates:
        return result(Decision.NOT_MATCHED, [*found, R.internal_only()])

    blocked_addresses = _normalised_addresses(directory.blocked_addresses)
    blocked_domains = _normalised_domains(directory.blocked_domains)
    allowed: list[str] = []
    for addr in candidates:
        domain = domain_of(addr)
        if addr in blocked_addresses:
            found.append(R.blocklisted_address(addr))
        elif domain in blocked_domains:
            found.append(R.blocklisted_domain(addr, domain))
        else:
            allowed.append(addr)

    contacts_by_address = _normalised_keys(directory.contacts_by_address, normalize_address)
    clients_by_domain = (
        _normalised_keys(directory.clients_by_domain, normalize_domain) if directory.domain_matching else {}
    )
    contact_ids: set[str] = set()
    client_ids: set[str] = set()
    unknown: list[str] = []
    user_excluded: list[Reason] = []
    would_have_matched = False
    for addr in allowed:
        refs = contacts_by_address.get(addr, frozenset())
        entry = excluded_by(addr, owner.never_log) if owner.never_log else None
        if entry is not None:
            user_excluded.append(R.user_excluded(addr, entry))
            would_have_matched |= bool(refs) or bool(clients_by_domain.get(domain_of(addr)))
            continue
        if refs:
            for ref in sorted(refs, key=lambda r: (r.contact_id, r.client_id is not None, r.client_id or "")):
                found.append(R.contact_address(addr, ref.contact_id, ref.client_id))
                contact_ids.add(ref.contact_id)
                if ref.client_id is not None:
                    client_ids.add(ref.client_id)
            continue
        domain = domain_of(addr)
        clients = clients_by_domain.get(domain, frozenset())
        if clients:
            for client_id in sorted(clients):
                found.append(R.client_domain(addr, domain, client_id))
                client_ids.add(client_id)
            continue
        unknown.append(addr)

    found.extend(R.unknown_address(addr, directory.domain_matching) for addr in unknown)
    if contact_ids or client_ids:
        return result(Decision.MATCHED, [*found, *user_excluded], contact_ids, client_ids)
    if would_have_matched:
        return result(Decision.EXCLUDED, found, headline=user_excluded)
    found.extend(user_excluded)
    return result(Decision.NOT_MATCHED, [*found, R.no_known_participant(unknown, directory.domain_matching)])

"""Domain types shared by the services: pure data, no I/O."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum


class Role(StrEnum):
    FROM = "from"
    SENDER = "sender"
    TO = "to"
    CC = "cc"
    BCC = "bcc"
    REPLY_TO = "reply_to"


class Direction(StrEnum):
    INBOUND = "inbound"
    OUTBOUND = "outbound"


class Decision(StrEnum):
    MATCHED = "matched"
    NOT_MATCHED = "not_matched"
    EXCLUDED = "excluded"
    NOT_SEEN = "not_seen"


class ConnectionStatus(StrEnum):
    NEVER_CONNECTED = "never_connected"
    CONNECTED = "connected"
    RECONNECT_REQUIRED = "reconnect_required"
    CONSENT_REQUIRED = "consent_required"
    DISCONNECTED = "disconnected"


@dataclass(frozen=True)
class EmailAddress:
    """An address as Graph reports it (`{"emailAddress": {"name", "address"}}`), not yet normalised."""

    address: str
    name: str = ""


@dataclass(frozen=True)
class MailMessage:
    """The fields of a Graph message that matching needs (never the body)."""

    message_id: str
    internet_message_id: str
    conversation_id: str
    subject: str
    folder: str  # well-known folder name ("inbox", "junkemail", ...) or "other" for user folders
    is_draft: bool
    received_at: datetime | None
    sent_at: datetime | None
    from_: EmailAddress | None
    sender: EmailAddress | None
    to: tuple[EmailAddress, ...] = ()
    cc: tuple[EmailAddress, ...] = ()
    bcc: tuple[EmailAddress, ...] = ()
    reply_to: tuple[EmailAddress, ...] = ()
    preview: str = ""  # Graph's bodyPreview, fetched only when the account's capture tier keeps it
    # The header that marks the mail as bulk or machine mail (services.core.domain.automated), e.g.
    # "List-Unsubscribe: <mailto:...>"; None when it carries none or its headers were not read.
    automated_by: str | None = None


@dataclass(frozen=True)
class MailboxOwner:
    user_id: str
    account_id: str
    addresses: frozenset[str]  # normalised primary address and aliases
    never_log: frozenset[str] = frozenset()  # the user's own exclusions: "addr@x" and "@domain" entries


@dataclass(frozen=True)
class ContactRef:
    contact_id: str
    client_id: str | None


@dataclass(frozen=True)
class DirectorySnapshot:
    """What one account's directory says about a set of normalised addresses.

    Loaded by the I/O layer for exactly the participants of one message, so matching stays pure.
    """

    account_id: str
    contacts_by_address: Mapping[str, frozenset[ContactRef]] = field(default_factory=dict)
    colleague_addresses: frozenset[str] = frozenset()  # addresses of any user of the account
    clients_by_domain: Mapping[str, frozenset[str]] = field(default_factory=dict)
    blocked_addresses: frozenset[str] = frozenset()
    blocked_domains: frozenset[str] = frozenset()
    domain_matching: bool = False
    exclude_automated: bool = False  # the account's setting (the I/O layer sets it; default on in the database)


@dataclass(frozen=True)
class Participant:
    address: str  # normalised
    name: str
    role: Role


@dataclass(frozen=True)
class Reason:
    code: str
    detail: str


@dataclass(frozen=True)
class MatchResult:
    decision: Decision
    reasons: tuple[Reason, ...]
    direction: Direction
    participants: tuple[Participant, ...]
    contact_ids: tuple[str, ...] = ()
    client_ids: tuple[str, ...] = ()

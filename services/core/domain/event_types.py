"""One model per event type on mailsync's Kafka topics (docs/contract.md#kafka, docs/asyncapi.yaml).

Producers build these instead of dicts, so a misspelt or missing field is a type error (mypy), and
consumers turn a record into one, so a malformed record is a BadEvent whose reason names the field. Every
model carries the envelope (`type`, `version`, `event_id`, `occurred_at`); unknown fields are ignored, and
fields added after a type was first published have defaults (producers may omit them, consumers default
them). tests/unit/test_event_types.py checks docs/asyncapi.yaml against these models.

msgspec, not pydantic: msgspec decodes and validates a typical event several times faster than the dict
path it replaced (docs/design.md#typed-events has the figure); Struct construction validates nothing, so
producers pay only for the encode.
"""

from __future__ import annotations

import enum
import re
import typing
import uuid
from collections.abc import Mapping
from typing import Annotated, Any, Generic, Literal, TypeVar

import msgspec
from msgspec import UNSET, UnsetType

from services.core.domain import events
from services.core.domain.capture import Capture
from services.core.domain.events import BadEvent
from services.core.domain.model import ConnectionStatus, Direction
from services.core.domain.model import Role as ParticipantRole

__all__ = [
    "DIRECTORY_EVENTS", "ENGAGEMENT_EVENTS", "LIFECYCLE_EVENTS", "NOTICE_EVENTS", "NOTIFICATION_EVENTS",
    "SEND_EVENTS", "STATUS_EVENTS", "TOPIC_EVENTS", "UNSET", "AccountUpserted", "BlocklistUpserted",
    "ClientUpserted", "ConnectionStatusChanged", "ContactDeleted", "ContactUpserted", "DeadLetter", "EngagementCreated",
    "EngagementLinked", "Event", "MessageChanged", "NoticeActionRequired", "NoticeReminder", "NoticeResolved",
    "Participant", "SendCompleted", "SendFailed", "SubscriptionLifecycle", "TenantConnectionStatusChanged",
    "TopicEvents", "UnsetType", "UserDeleted", "UserUpserted", "encode", "to_value",
]

# An id or other required text: present and not empty (what `events.require_str` demanded of dicts).
Text = Annotated[str, msgspec.Meta(min_length=1)]


def _new_event_id() -> str:
    return str(uuid.uuid4())


class Event(msgspec.Struct, kw_only=True, tag_field="type"):
    """The envelope. Pass a deterministic `event_id` (events.stable_event_id) where redeliveries must dedupe."""

    version: int = 1
    event_id: str = msgspec.field(default_factory=_new_event_id)
    occurred_at: str = msgspec.field(default_factory=events.now_iso)

    @classmethod
    def type_name(cls) -> str:
        return str(cls.__struct_config__.tag)


# --- crm.directory.v1 (the host CRM writes, the matcher reads) ----------------------------------------------

Role = Literal["member", "admin"]


class UserUpserted(Event, tag="user.upserted"):
    user_id: Text
    account_id: Text
    email: Text
    aliases: list[str] = []
    never_log: list[str] = []  # round two: "addr@x" or "@domain"
    role: Role | UnsetType | None = UNSET  # round two: absent or null is member


class UserDeleted(Event, tag="user.deleted"):
    user_id: Text
    account_id: Text


class ContactUpserted(Event, tag="contact.upserted"):
    contact_id: Text
    account_id: Text
    client_id: str | None = None
    emails: list[str] = []


class ContactDeleted(Event, tag="contact.deleted"):
    contact_id: Text
    account_id: Text


class ClientUpserted(Event, tag="client.upserted"):
    client_id: Text
    account_id: Text
    name: str | UnsetType | None = UNSET
    domains: list[str] = []


class BlocklistUpserted(Event, tag="blocklist.upserted"):
    account_id: Text
    entries: list[str] = []


class AccountUpserted(Event, tag="account.upserted"):
    """The record states the whole account: an omitted field takes its default."""

    account_id: Text
    name: str | UnsetType | None = UNSET
    domain_matching: bool = False
    capture: Capture | UnsetType | None = UNSET  # round two: absent or null is subject (capture.DEFAULT)
    exclude_automated: bool = True  # round two


DirectoryEvent = (UserUpserted | UserDeleted | ContactUpserted | ContactDeleted | ClientUpserted
                  | BlocklistUpserted | AccountUpserted)

# --- mailsync.notifications.v1 / mailsync.lifecycle.v1 ------------------------------------------------------

ChangeType = Literal["created", "updated", "deleted"]
FoundBy = Literal["webhook", "delta", "backfill", "backsync"]
LifecycleKind = Literal["reauthorizationRequired", "subscriptionRemoved", "missed"]


class MessageChanged(Event, tag="message.changed"):
    connection_id: Text
    message_id: Text
    change_type: ChangeType
    source: FoundBy
    account_id: str | UnsetType = UNSET
    subscription_id: str | UnsetType = UNSET  # webhook only
    job_id: str | UnsetType = UNSET  # the back-fill or back-sync that found it


class SubscriptionLifecycle(Event, tag="subscription.lifecycle"):
    connection_id: Text
    subscription_id: Text
    lifecycle_event: LifecycleKind
    account_id: str | UnsetType = UNSET


NotificationEvent = MessageChanged
LifecycleEvent = SubscriptionLifecycle

# --- mailsync.engagements.v1 (the matcher writes) -----------------------------------------------------------

EngagementSource = Literal["webhook", "delta", "backfill", "backsync", "rematch"]


class Participant(msgspec.Struct, kw_only=True):
    address: str
    role: ParticipantRole
    name: str = ""


class EngagementCreated(Event, tag="engagement.created"):
    """`occurred_at` is the message's time (not the publication's), so a republication is the same event."""

    engagement_id: Text
    account_id: Text
    contact_ids: list[str]
    client_ids: list[str]
    direction: Direction
    occurred_at: str
    internet_message_id: str
    conversation_id: str
    participants: list[Participant]
    mailbox_user_ids: list[str]
    # Round two, but required: mailsync is this type's only producer and always writes it (the feed's
    # consumers, who may read older records, default it to []).
    mailbox_addresses: list[str]  # in the order of mailbox_user_ids
    source: EngagementSource
    subject: str | UnsetType = UNSET  # absent under capture metadata
    preview: str | UnsetType = UNSET  # round two: only under capture preview
    send_id: str | UnsetType = UNSET  # round two: sent through the API


class EngagementLinked(Event, tag="engagement.linked"):
    """The engagement's full, current contact list."""

    engagement_id: Text
    contact_ids: list[str]
    account_id: str | UnsetType = UNSET


EngagementEvent = EngagementCreated | EngagementLinked

# --- mailsync.connection-status.v1, mailsync.notices.v1, mailsync.sends.v1, <topic>.dlq ---------------------

NeedsSomeone = Literal["reconnect_required", "consent_required"]


class ConnectionStatusChanged(Event, tag="connection.status"):
    """The latest status of a connection (a compacted topic): published on every change."""

    connection_id: Text
    user_id: str
    account_id: str
    status: ConnectionStatus
    reason: str | None
    error_code: str | None


TenantStatus = Literal["pending_consent", "connected", "consent_revoked", "disconnected"]


class TenantConnectionStatusChanged(Event, tag="tenant_connection.status"):
    """The latest status of an account's tenant-wide connection, on the same compacted topic keyed by
    tenant_connection_id (additive: consumers skip types they do not know)."""

    tenant_connection_id: Text
    account_id: str
    tenant_id: str
    status: TenantStatus
    reason: str | None
    error_code: str | None


StatusEvent = ConnectionStatusChanged | TenantConnectionStatusChanged


class _NoticeFields(Event, kw_only=True):
    notice_id: Text
    user_id: str
    account_id: str
    connection_id: Text
    status: NeedsSomeone
    reason: str | None
    error_code: str | None
    action_url: str
    since: str  # when the incident began


class NoticeActionRequired(_NoticeFields, tag="notice.action_required"):
    pass


class NoticeReminder(_NoticeFields, tag="notice.reminder"):
    pass


class NoticeResolved(Event, tag="notice.resolved"):
    notice_id: Text
    user_id: str
    account_id: str
    connection_id: Text


NoticeEvent = NoticeActionRequired | NoticeReminder | NoticeResolved


class SendCompleted(Event, tag="send.completed"):
    send_id: Text
    user_id: str
    account_id: str
    internet_message_id: str


class SendFailed(Event, tag="send.failed"):
    send_id: Text
    user_id: str
    account_id: str
    error: str


SendEvent = SendCompleted | SendFailed


class DeadLetter(Event, tag="dlq.record"):
    """A poison record: the original value as text plus why it was refused."""

    topic: str
    partition: int
    offset: int
    key: str
    value: str
    error: str


# --- encoding ------------------------------------------------------------------------------------------------

_ENCODER = msgspec.json.Encoder()


def encode(event: Event) -> bytes:
    """The record value: compact UTF-8 JSON, `type` first, absent optional fields left out."""
    return _ENCODER.encode(event)


def to_value(event: Event) -> dict[str, Any]:
    """The event as the dict the Publisher takes (the same JSON as `encode`)."""
    value: dict[str, Any] = msgspec.to_builtins(event)
    return value


# --- decoding ------------------------------------------------------------------------------------------------

E = TypeVar("E", bound=Event)


class TopicEvents(Generic[E]):
    """The event types of one topic, as a tagged union on `type`.

    `parse` turns a record the consumer loop already decoded (events.decode) into its model; `decode` does
    both from the record's bytes. Either returns None for a type this version does not know (consumers skip
    those: newer producers may add types) and raises BadEvent, with a reason naming the field, for a record
    of a known type that is malformed."""

    def __init__(self, topic: str, union: Any) -> None:
        self.topic = topic
        self.types: dict[str, type[Event]] = {cls.type_name(): cls for cls in typing.get_args(union) or (union,)}

    def parse(self, value: Mapping[str, Any]) -> E | None:
        kind = value.get("type")
        if not isinstance(kind, str):
            raise BadEvent("value has no string 'type'")
        cls = self.types.get(kind)
        if cls is None:
            return None
        try:
            return typing.cast(E, msgspec.convert(value, cls))
        except msgspec.ValidationError as exc:
            raise BadEvent(_reason(exc, cls)) from None

    def decode(self, raw: bytes | None) -> E | None:
        """From bytes: events.decode (size, depth, NUL and lone surrogates; msgspec parses the common case),
        then `parse`. Not msgspec straight into the Struct: it would skip an unknown field's content unread
        (a 5,000-digit number there is refused today), and this costs a few microseconds more."""
        return self.parse(events.decode(raw))

DIRECTORY_EVENTS: TopicEvents[DirectoryEvent] = TopicEvents(events.DIRECTORY, DirectoryEvent)
NOTIFICATION_EVENTS: TopicEvents[NotificationEvent] = TopicEvents(events.NOTIFICATIONS, NotificationEvent)
LIFECYCLE_EVENTS: TopicEvents[LifecycleEvent] = TopicEvents(events.LIFECYCLE, LifecycleEvent)
ENGAGEMENT_EVENTS: TopicEvents[EngagementEvent] = TopicEvents(events.ENGAGEMENTS, EngagementEvent)
STATUS_EVENTS: TopicEvents[StatusEvent] = TopicEvents(events.CONNECTION_STATUS, StatusEvent)
NOTICE_EVENTS: TopicEvents[NoticeEvent] = TopicEvents(events.NOTICES, NoticeEvent)
SEND_EVENTS: TopicEvents[SendEvent] = TopicEvents(events.SENDS, SendEvent)
DEAD_LETTERS: TopicEvents[DeadLetter] = TopicEvents("{topic}.dlq", DeadLetter)

# Every topic's types (the dead-letter topics under their AsyncAPI address).
TOPIC_EVENTS: tuple[TopicEvents[Any], ...] = (
    DIRECTORY_EVENTS, NOTIFICATION_EVENTS, LIFECYCLE_EVENTS, ENGAGEMENT_EVENTS, STATUS_EVENTS, NOTICE_EVENTS,
    SEND_EVENTS, DEAD_LETTERS)


# --- reasons -------------------------------------------------------------------------------------------------

_KINDS = {"str": "a string", "int": "an integer", "bool": "a boolean", "array": "a list", "object": "an object",
          "null": "null", "float": "a number"}
_EXPECTED = re.compile(r"Expected `([^`]+)`(?:, got `([^`]+)`)?")


def _reason(exc: msgspec.ValidationError, cls: type[Event]) -> str:
    """msgspec's message in the words the DLQ has always used ("role must be one of member, admin")."""
    message, _, where = str(exc).partition(" - at `")
    path = where.rstrip("`").removeprefix("$").removeprefix(".") or "value"
    if missing := re.fullmatch(r"Object missing required field `(.+)`", message):
        name = missing[1] if path == "value" else f"{path}.{missing[1]}"
        return f"{name} is required"
    if message.startswith("Expected `str` of length >= 1"):
        return f"{path} must be a non-empty string"
    if message.startswith("Invalid enum value"):
        allowed = _literal_values(cls, path)
        got = message.removeprefix("Invalid enum value ")
        return f"{path} must be one of {', '.join(allowed)} (got {got[:40]})" if allowed else f"{path}: {message}"
    if expected := _EXPECTED.match(message):
        kinds = " or ".join(_KINDS.get(k, k) for k in expected[1].split(" | "))
        got = f", not {_KINDS.get(expected[2], expected[2])}" if expected[2] else ""
        return f"{path} must be {kinds}{got}"
    return f"{path}: {message}"


def _literal_values(cls: type[Event], field: str) -> list[str]:
    hint = typing.get_type_hints(cls).get(field)
    values: list[str] = []
    for arg in [hint, *typing.get_args(hint)]:
        if typing.get_origin(arg) is Literal:
            values += [str(v) for v in typing.get_args(arg)]
        elif isinstance(arg, type) and issubclass(arg, enum.Enum):
            values += [str(member.value) for member in arg]
    return values

"""Pure parsing of a Graph message resource into the fields matching needs."""

from __future__ import annotations

from typing import Any

from services.core.adapters.graph.client import MESSAGE_FIELDS
from services.core.adapters.graph.times import parse_graph_time_or_none
from services.core.domain import automated
from services.core.domain.capture import PREVIEW_MAX
from services.core.domain.model import EmailAddress, MailMessage


def message_select(*, headers: bool, preview: bool) -> str:
    """The $select of the matcher's one GET per message: the fields matching needs, plus
    internetMessageHeaders (returned only when selected) when automated mail is excluded, and bodyPreview
    when the capture tier keeps previews. The body itself is never asked for."""
    extra = (",internetMessageHeaders" if headers else "") + (",bodyPreview" if preview else "")
    return MESSAGE_FIELDS + extra


class UnusableMessage(ValueError):
    """Graph answered with something that is not a message."""


def _address(value: Any) -> EmailAddress | None:
    if not isinstance(value, dict):
        return None
    inner = value.get("emailAddress")
    if not isinstance(inner, dict):
        return None
    address = inner.get("address")
    if not isinstance(address, str) or not address.strip():
        return None
    name = inner.get("name")
    return EmailAddress(address=address.strip(), name=name if isinstance(name, str) else "")


def _addresses(value: Any) -> tuple[EmailAddress, ...]:
    if not isinstance(value, list):
        return ()
    return tuple(a for a in (_address(v) for v in value) if a is not None)


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def parse_message(body: dict[str, Any], *, folder: str) -> MailMessage:
    message_id = body.get("id")
    if not isinstance(message_id, str) or not message_id:
        raise UnusableMessage("message has no id")
    return MailMessage(
        message_id=message_id,
        internet_message_id=_text(body.get("internetMessageId")).strip(),
        conversation_id=_text(body.get("conversationId")),
        subject=_text(body.get("subject"))[:1000],
        folder=folder,
        is_draft=body.get("isDraft") is True,
        received_at=parse_graph_time_or_none(body.get("receivedDateTime")),
        sent_at=parse_graph_time_or_none(body.get("sentDateTime")),
        from_=_address(body.get("from")),
        sender=_address(body.get("sender")),
        to=_addresses(body.get("toRecipients")),
        cc=_addresses(body.get("ccRecipients")),
        bcc=_addresses(body.get("bccRecipients")),
        reply_to=_addresses(body.get("replyTo")),
        # Present only when the $select asked for them (the account's tier keeps previews / it excludes
        # automated mail); absent, they mean "not read", never "empty".
        preview=_text(body.get("bodyPreview"))[:PREVIEW_MAX],
        automated_by=_automation(body.get("internetMessageHeaders")),
    )


def _automation(headers: Any) -> str | None:
    found = automated.classify(automated.from_graph(headers))
    return found.describe() if found is not None else None

"""Graph sending: `sendMail`, drafts and their `send`, Exchange Online's sending limits (docs/graph.md#sending).

- `POST /users/{id}/sendMail` (and `/me/sendMail`) `{"message", "saveToSentItems"}` → `202`, no body. Needs
  `Mail.Send`. The copy lands in the sender's Sent Items (unless `saveToSentItems` is false) with change
  notifications, and in the Inbox of every recipient that is a sandbox mailbox (by address or alias).
- `POST /users/{id}/messages` → `201` with the draft (in Drafts, `isDraft` true). Needs `Mail.ReadWrite`, as
  Graph's create-message page says. `internetMessageId` and `singleValueExtendedProperties` may be set on
  create (the message resource: internetMessageId is updatable only while isDraft is true).
- `POST /users/{id}/messages/{id}/send` → `202`: the draft is sent and moves to Sent Items. Needs `Mail.Send`.
- Limits per sending mailbox, in sandbox time: at most 30 messages in any minute and 10,000 recipients in any
  24 hours (Exchange Online limits, "Sending limits"); at most 500 recipients per message. Over a rate limit
  Graph answers `429` with `Retry-After`, the Outlook throttling answer; over 500 recipients `400`.
- The sandbox does what Exchange does with a client-chosen internetMessageId that was used before: it sends
  again (a second message with the same id). That is what lets a test see a client that sends twice.

Faults for tests (`POST /sandbox/send-faults`): `lose_responses: N` — the next N sends are performed and then
answered `504` (the answer is lost, the message went: what a timeout after Graph accepted looks like);
`respond_delay_ms: M` — every send is performed at once and answered only M ms later (time to kill a client
mid-call). `{"reset": true}` clears them.
"""

from __future__ import annotations

import asyncio
import math
import re
import uuid
import weakref
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from aiohttp import web

from mailsync_sandbox.graph_core import GraphCall, GraphResponse, graph_error, route
from mailsync_sandbox.graph_messages import find_message, message_json
from mailsync_sandbox.mailstore import InputError
from mailsync_sandbox.model import Address, Mailbox, parse_address
from mailsync_sandbox.state import SANDBOX, Sandbox
from mailsync_sandbox.tokens import graph_scopes

MESSAGES_PER_MINUTE = 30
RECIPIENTS_PER_DAY = 10_000
MAX_RECIPIENTS = 500
DAY_S = 24 * 3600.0
_MESSAGE_ID = re.compile(r"^<[^<>@\s]+@[^<>@\s]+>$")


@dataclass
class SendFaults:
    lose_responses: int = 0
    respond_delay_ms: int = 0


_FAULTS: weakref.WeakKeyDictionary[Sandbox, SendFaults] = weakref.WeakKeyDictionary()


def faults_of(sb: Sandbox) -> SendFaults:
    return _FAULTS.setdefault(sb, SendFaults())


def _has_scope(call: GraphCall, *wanted: str) -> bool:
    assert call.token is not None
    granted = {s.lower() for s in graph_scopes(call.token.grant.scopes)}
    return any(w.lower() in granted for w in wanted)


def _denied() -> GraphResponse:
    return graph_error(403, "ErrorAccessDenied", "Access is denied. Check credentials and try again.")


def _recipients(message: dict[str, Any], key: str) -> list[Address]:
    raw = message.get(key) or []
    if not isinstance(raw, list):
        raise InputError(f"{key} must be a collection of recipients")
    try:
        return [parse_address(r) for r in raw]
    except ValueError:
        raise InputError("At least one recipient is not valid.") from None


@dataclass(frozen=True)
class Outgoing:
    subject: str
    body: str
    body_type: str
    to: list[Address]
    cc: list[Address]
    bcc: list[Address]
    internet_message_id: str | None
    properties: dict[str, str]

    @property
    def count(self) -> int:
        return len(self.to) + len(self.cc) + len(self.bcc)


def _outgoing(message: Any) -> Outgoing:
    if not isinstance(message, dict):
        raise InputError("The message is missing or is not an object.")
    body = message.get("body") or {}
    if not isinstance(body, dict):
        raise InputError("body must be an itemBody object")
    content_type = str(body.get("contentType") or "text").lower()
    if content_type not in ("text", "html"):
        raise InputError("body.contentType must be text or html")
    imid = message.get("internetMessageId")
    if imid is not None and (not isinstance(imid, str) or not _MESSAGE_ID.match(imid)):
        raise InputError("internetMessageId must be an RFC 2822 message id: <local@domain>")
    props: dict[str, str] = {}
    for prop in message.get("singleValueExtendedProperties") or []:
        if not isinstance(prop, dict) or not isinstance(prop.get("id"), str) or not isinstance(prop.get("value"), str):
            raise InputError("singleValueExtendedProperties entries need string id and value")
        props[prop["id"]] = prop["value"]
    subject = message.get("subject") or ""
    content = body.get("content") or ""
    if not isinstance(subject, str) or not isinstance(content, str):
        raise InputError("subject and body.content must be strings")
    return Outgoing(subject=subject, body=content, body_type=content_type,
                    to=_recipients(message, "toRecipients"), cc=_recipients(message, "ccRecipients"),
                    bcc=_recipients(message, "bccRecipients"), internet_message_id=imid, properties=props)


def _over_limit(sb: Sandbox, mailbox: Mailbox, recipients: int) -> GraphResponse | None:
    """Exchange's sending limits for this mailbox, in sandbox time; None when it may send now."""
    now = sb.clock.time()
    mailbox.sent_log[:] = [(t, n) for t, n in mailbox.sent_log if t > now - DAY_S]
    minute = [t for t, _ in mailbox.sent_log if t > now - 60]
    if len(minute) >= MESSAGES_PER_MINUTE:
        wait = minute[len(minute) - MESSAGES_PER_MINUTE] + 60 - now
        return graph_error(429, "ApplicationThrottled", f"Message rate limit exceeded: a mailbox sends at most "
                           f"{MESSAGES_PER_MINUTE} messages per minute.",
                           {"Retry-After": str(max(1, math.ceil(wait)))})
    total = sum(n for _, n in mailbox.sent_log)
    if total + recipients > RECIPIENTS_PER_DAY:
        excess, wait = total + recipients - RECIPIENTS_PER_DAY, 0.0
        for t, n in mailbox.sent_log:
            excess -= n
            wait = t + DAY_S - now
            if excess <= 0:
                break
        return graph_error(429, "ApplicationThrottled", f"Recipient rate limit exceeded: a mailbox sends to at "
                           f"most {RECIPIENTS_PER_DAY} recipients per day.",
                           {"Retry-After": str(max(1, math.ceil(wait)))})
    return None


def _check(call: GraphCall, out: Outgoing) -> GraphResponse | None:
    if out.count == 0:
        return graph_error(400, "ErrorInvalidRecipients", "At least one recipient is not valid., Recipient is "
                           "missing.")
    if out.count > MAX_RECIPIENTS:
        return graph_error(400, "ErrorTooManyRecipients", f"A message can have at most {MAX_RECIPIENTS} "
                           "recipients.")
    return _over_limit(call.sb, call.me(), out.count)


def _deliver_to_recipients(sb: Sandbox, sender: Mailbox, out: Outgoing, internet_message_id: str) -> None:
    """A copy in the Inbox of every sandbox mailbox among the recipients (each once; Bcc not shown)."""
    seen: set[str] = set()
    for address in (*out.to, *out.cc, *out.bcc):
        target = sb.mail.by_sign_in_name(address.address)
        if target is None or target.user_id in seen:
            continue
        seen.add(target.user_id)
        sb.mail.deliver(target, {
            "folder": "inbox", "from": Address(sender.display_name, sender.address).graph(),
            "to": [a.graph() for a in out.to], "cc": [a.graph() for a in out.cc], "subject": out.subject,
            "body": out.body, "body_type": out.body_type, "internet_message_id": internet_message_id,
            "received_at": sb.clock.now().isoformat(), "is_read": False})


async def _answer(sb: Sandbox) -> GraphResponse:
    """202 (no body), or what the send faults turn it into: the send itself has happened either way."""
    faults = faults_of(sb)
    if faults.respond_delay_ms:
        await asyncio.sleep(faults.respond_delay_ms / 1000)
    if faults.lose_responses > 0:
        faults.lose_responses -= 1
        return graph_error(504, "UnknownError", "The gateway did not receive a timely response.")
    return GraphResponse(202)


def _store_fields(out: Outgoing, folder: str, *, is_draft: bool) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "folder": folder, "to": [a.graph() for a in out.to], "cc": [a.graph() for a in out.cc],
        "bcc": [a.graph() for a in out.bcc], "subject": out.subject, "body": out.body, "body_type": out.body_type,
        "is_draft": is_draft, "is_read": True}
    if out.internet_message_id:
        fields["internet_message_id"] = out.internet_message_id
    return fields


@route("POST", "sendmail", "mail")
async def send_mail(call: GraphCall) -> GraphResponse:
    if not _has_scope(call, "Mail.Send"):
        return _denied()
    body = call.body if isinstance(call.body, dict) else {}
    try:
        out = _outgoing(body.get("message"))
    except InputError as exc:
        return graph_error(400, "ErrorInvalidRecipients" if "recipient" in str(exc) else "BadRequest", str(exc))
    refused = _check(call, out)
    if refused is not None:
        return refused
    sb, mailbox = call.sb, call.me()
    mailbox.sent_log.append((sb.clock.time(), out.count))
    imid = out.internet_message_id or f"<{uuid.uuid4()}@sandbox.local>"
    if body.get("saveToSentItems", True) is not False:
        sent = sb.mail.deliver(mailbox, {**_store_fields(out, "sentitems", is_draft=False),
                                         "internet_message_id": imid})
        sent.extended_properties.update(out.properties)
    _deliver_to_recipients(sb, mailbox, out, imid)
    return await _answer(sb)


@route("POST", "messages", "mail")
async def create_draft(call: GraphCall) -> GraphResponse:
    if not _has_scope(call, "Mail.ReadWrite"):
        return _denied()
    try:
        out = _outgoing(call.body)
    except InputError as exc:
        return graph_error(400, "ErrorInvalidRecipients" if "recipient" in str(exc) else "BadRequest", str(exc))
    mailbox = call.me()
    draft = call.sb.mail.deliver(mailbox, _store_fields(out, "drafts", is_draft=True))
    draft.extended_properties.update(out.properties)
    context = f"{call.graph_base}/$metadata#users('{quote(mailbox.user_id)}')/messages/$entity"
    return GraphResponse(201, {"@odata.context": context, **message_json(draft, None)})


@route("POST", "messages/*/send", "mail")
async def send_draft(call: GraphCall) -> GraphResponse:
    if not _has_scope(call, "Mail.Send"):
        return _denied()
    sb, mailbox = call.sb, call.me()
    found = find_message(mailbox, call.args[0])
    if isinstance(found, GraphResponse):
        return found
    if not found.is_draft:
        return graph_error(400, "ErrorInvalidOperation", "Only a draft message can be sent.")
    out = Outgoing(found.subject, found.body, found.body_type, found.to, found.cc, found.bcc,
                   found.internet_message_id, found.extended_properties)
    refused = _check(call, out)
    if refused is not None:
        return refused
    mailbox.sent_log.append((sb.clock.time(), out.count))
    found.is_draft = False
    found.sent = found.received = sb.clock.now()
    sb.mail.move(mailbox, found, "sentitems")
    _deliver_to_recipients(sb, mailbox, out, found.internet_message_id)
    return await _answer(sb)


# --- control ----------------------------------------------------------------------------------


async def set_send_faults(request: web.Request) -> web.Response:
    sb = request.app[SANDBOX]
    try:
        body = await request.json()
    except ValueError:
        body = None
    if not isinstance(body, dict) or set(body) - {"lose_responses", "respond_delay_ms", "reset"}:
        return web.json_response({"error": {"code": "bad_request", "message": "send faults take lose_responses, "
                                            "respond_delay_ms and reset"}}, status=400)
    faults = faults_of(sb)
    if body.get("reset") is True:
        faults.lose_responses = faults.respond_delay_ms = 0
    for key in ("lose_responses", "respond_delay_ms"):
        if key in body:
            value = body[key]
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 600_000:
                return web.json_response({"error": {"code": "bad_request", "message": f"{key} must be an integer "
                                                    "between 0 and 600000"}}, status=400)
            setattr(faults, key, value)
    return web.json_response({"lose_responses": faults.lose_responses, "respond_delay_ms": faults.respond_delay_ms})

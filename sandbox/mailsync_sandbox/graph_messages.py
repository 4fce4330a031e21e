"""Graph messages: the resource's JSON (with `$select`), single GETs and paged lists.

Lists are newest first by default (`$orderby` on one date field, asc or desc), `$top` is the page
size (default 10, at most 1000, `Prefer: odata.maxpagesize` may lower it), further pages via an
absolute `@odata.nextLink` carrying `$skip`, as Graph does. `$filter` takes conjunctions of
comparisons on the date fields, `isDraft`, `isRead`, `hasAttachments`, `internetMessageId`,
`conversationId`, `subject` and `parentFolderId`. `internetMessageHeaders` only with `$select`.
"""

from __future__ import annotations

import base64
import hashlib
import re
from datetime import datetime
from email.utils import format_datetime
from typing import Any
from urllib.parse import quote, urlencode

from mailsync_sandbox.graph_core import GraphCall, GraphResponse, graph_error, route
from mailsync_sandbox.graph_folders import find_folder
from mailsync_sandbox.model import MESSAGE_ID_PREFIX, Mailbox, Message, looks_like_id
from mailsync_sandbox.odata import ODataError, holds, max_page_size, parse_filter, parse_int, parse_select
from mailsync_sandbox.timefmt import graph_time

MESSAGE_FIELDS = (
    "id", "createdDateTime", "lastModifiedDateTime", "changeKey", "categories", "receivedDateTime", "sentDateTime",
    "hasAttachments", "internetMessageId", "subject", "bodyPreview", "importance", "parentFolderId",
    "conversationId", "conversationIndex", "isDeliveryReceiptRequested", "isReadReceiptRequested", "isRead",
    "isDraft", "webLink", "inferenceClassification", "body", "uniqueBody", "sender", "from", "toRecipients",
    "ccRecipients", "bccRecipients", "replyTo", "flag", "internetMessageHeaders",
)
NOT_BY_DEFAULT = frozenset({"uniqueBody", "internetMessageHeaders"})
FILTER_TYPES = {
    "receivedDateTime": "datetime", "sentDateTime": "datetime", "createdDateTime": "datetime",
    "lastModifiedDateTime": "datetime", "isDraft": "bool", "isRead": "bool", "hasAttachments": "bool",
    "internetMessageId": "str", "conversationId": "str", "subject": "str", "parentFolderId": "str",
}
ORDERABLE = ("receivedDateTime", "sentDateTime", "createdDateTime", "lastModifiedDateTime")
_TAGS = re.compile(r"<[^>]+>")


def _preview(message: Message) -> str:
    text = _TAGS.sub(" ", message.body) if message.body_type == "html" else message.body
    return " ".join(text.split())[:255]


def _headers(message: Message) -> list[dict[str, str]] | None:
    if message.is_draft:
        return None
    pairs = [
        ("Received", f"from mail.sandbox.local by sandbox.local; {format_datetime(message.received)}"),
        ("MIME-Version", "1.0"),
        ("Content-Type", f'text/{"html" if message.body_type == "html" else "plain"}; charset="utf-8"'),
        ("Date", format_datetime(message.sent)), ("Message-ID", message.internet_message_id),
        ("Subject", message.subject), ("Thread-Topic", message.subject),
    ]
    if message.from_ is not None:
        pairs.append(("From", message.from_.header()))
    if message.sender is not None and message.sender != message.from_:
        pairs.append(("Sender", message.sender.header()))
    for name, group in (("To", message.to), ("Cc", message.cc), ("Reply-To", message.reply_to)):
        if group:
            pairs.append((name, ", ".join(a.header() for a in group)))
    pairs.extend(message.extra_headers)
    return [{"name": n, "value": v} for n, v in pairs]


def _value(message: Message, name: str) -> Any:
    simple: dict[str, Any] = {
        "createdDateTime": graph_time(message.created), "lastModifiedDateTime": graph_time(message.modified),
        "changeKey": message.change_key, "categories": [], "receivedDateTime": graph_time(message.received),
        "sentDateTime": graph_time(message.sent), "hasAttachments": False,
        "internetMessageId": message.internet_message_id, "subject": message.subject, "importance": "normal",
        "parentFolderId": message.folder_id, "conversationId": message.conversation_id,
        "isDeliveryReceiptRequested": False, "isReadReceiptRequested": False, "isRead": message.is_read,
        "isDraft": message.is_draft, "inferenceClassification": "focused", "flag": {"flagStatus": "notFlagged"},
    }
    if name in simple:
        return simple[name]
    if name == "bodyPreview":
        return _preview(message)
    if name in ("body", "uniqueBody"):
        return {"contentType": message.body_type, "content": message.body}
    if name == "conversationIndex":
        return base64.b64encode(hashlib.sha256(message.conversation_id.encode()).digest()[:22]).decode()
    if name == "webLink":
        return f"https://outlook.office365.com/owa/?ItemID={quote(message.id, safe='')}&exvsurl=1" \
               "&viewmodel=ReadMessageItem"
    if name in ("from", "sender"):
        address = message.from_ if name == "from" else message.sender
        return address.graph() if address is not None else None
    if name == "internetMessageHeaders":
        return _headers(message)
    groups = {"toRecipients": message.to, "ccRecipients": message.cc, "bccRecipients": message.bcc,
              "replyTo": message.reply_to}
    return [a.graph() for a in groups[name]]


def message_json(message: Message, select: list[str] | None) -> dict[str, Any]:
    fields = select if select is not None else [f for f in MESSAGE_FIELDS if f not in NOT_BY_DEFAULT]
    out: dict[str, Any] = {"@odata.etag": message.etag, "id": message.id}
    for name in fields:
        if name != "id":
            out[name] = _value(message, name)
    return out


def find_message(mailbox: Mailbox, message_id: str) -> Message | GraphResponse:
    found = mailbox.messages.get(message_id)
    if found is not None:
        return found
    if looks_like_id(message_id, MESSAGE_ID_PREFIX):
        return graph_error(404, "ErrorItemNotFound", "The specified object was not found in the store.")
    return graph_error(400, "ErrorInvalidIdMalformed", "Id is malformed.")


@route("GET", "messages/*", "mail")
async def get_message(call: GraphCall) -> GraphResponse:
    return _get(call, call.args[-1])


@route("GET", "mailfolders/*/messages/*", "mail")
async def get_folder_message(call: GraphCall) -> GraphResponse:
    folder = find_folder(call.me(), call.args[0])
    return folder if isinstance(folder, GraphResponse) else _get(call, call.args[-1])


def _get(call: GraphCall, message_id: str) -> GraphResponse:
    mailbox = call.me()
    select = parse_select(call.query, MESSAGE_FIELDS, "message")
    found = find_message(mailbox, message_id)
    if isinstance(found, GraphResponse):
        return found
    context = f"{call.graph_base}/$metadata#users('{quote(mailbox.user_id)}')/messages/$entity"
    return GraphResponse(200, {"@odata.context": context, **message_json(found, select)})


@route("GET", "messages", "mail")
async def list_messages(call: GraphCall) -> GraphResponse:
    return _list(call, None, "messages")


@route("GET", "mailfolders/*/messages", "mail")
async def list_folder_messages(call: GraphCall) -> GraphResponse:
    folder = find_folder(call.me(), call.args[0])
    if isinstance(folder, GraphResponse):
        return folder
    return _list(call, folder.id, f"mailFolders/{quote(folder.id, safe='')}/messages")


@route("GET", "messages/delta", "mail")
async def mailbox_delta(call: GraphCall) -> GraphResponse:
    return graph_error(400, "ErrorInvalidRequest", "Change tracking of messages works per folder only: "
                       "use /mailFolders/{id}/messages/delta.")


def _order(raw: str | None) -> tuple[str, bool]:
    field, _, direction = (raw or "receivedDateTime desc").strip().partition(" ")
    canonical = {f.lower(): f for f in ORDERABLE}.get(field.lower())
    if canonical is None or direction.strip().lower() not in ("", "asc", "desc"):
        raise ODataError(400, "BadRequest", f"The $orderby '{raw}' is not supported.")
    return canonical, direction.strip().lower() == "desc"


def _date(message: Message, field: str) -> datetime:
    return {"receivedDateTime": message.received, "sentDateTime": message.sent,
            "createdDateTime": message.created, "lastModifiedDateTime": message.modified}[field]


def _list(call: GraphCall, folder_id: str | None, tail: str) -> GraphResponse:
    mailbox, query = call.me(), call.query
    select = parse_select(query, MESSAGE_FIELDS, "message")
    top = parse_int(query, "$top", default=10, low=1, high=1000)
    skip = parse_int(query, "$skip", default=0)
    page = min(top, max_page_size(call.headers) or top)
    conditions = parse_filter(query["$filter"], FILTER_TYPES) if query.get("$filter") else []
    field, descending = _order(query.get("$orderby"))
    chosen = [m for m in mailbox.messages.values()
              if (folder_id is None or m.folder_id == folder_id)
              and all(holds(c, _value(m, c.field) if c.field not in ORDERABLE else _date(m, c.field))
                      for c in conditions)]
    chosen.sort(key=lambda m: (_date(m, field), m.id), reverse=descending)
    body: dict[str, Any] = {
        "@odata.context": f"{call.graph_base}/$metadata#users('{quote(mailbox.user_id)}')/{tail}",
        "value": [message_json(m, select) for m in chosen[skip:skip + page]],
    }
    if skip + page < len(chosen):
        params = {k: v for k, v in query.items() if k != "$skip"}
        params["$skip"] = str(skip + page)
        body["@odata.nextLink"] = (f"{call.graph_base}/users/{quote(mailbox.user_id, safe='@')}/{tail}?"
                                   f"{urlencode(params, safe='$,()', quote_via=quote)}")
    return GraphResponse(200, body)

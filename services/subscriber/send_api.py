"""Sending mail from the application (service API): queue a send, read its outcome.

`POST /api/v1/users/{user_id}/send` validates, then stores the send with its idempotency key and the
internetMessageId mailsync gives the message, and answers 202: nothing is sent from here. The renewer's
send worker (services/renewer/sends.py) makes the Graph call. The same idempotency key for the same user
answers the first send, whatever its body, and never queues a second one. Every read filters on the
caller's account (services/core/adapters/store/sends.py), so another account's user or send answers 404 exactly like
one that does not exist.
"""

from __future__ import annotations

import uuid
from typing import Any

from aiohttp import web

from services.core.adapters.store.directory import Directory
from services.core.adapters.store.mailbox.connections import MailboxConnections
from services.core.adapters.store.sends import Sends
from services.core.domain.sends import SendRequestError, internet_message_id_for, parse_send_request
from services.subscriber.api import api_error, caller
from services.subscriber.keys import POOL

SEND_SCOPE = "mail.send"


def _granted_send(scopes: list[str]) -> bool:
    """Graph returns scopes with or without the resource prefix, in any case."""
    return any(s.lower().rpartition("/")[2] == SEND_SCOPE for s in scopes)


def _view(row: Any) -> dict[str, Any]:
    return {
        "send_id": str(row["send_id"]), "user_id": row["user_id"], "status": row["status"], "error": row["error"],
        "engagement_id": str(row["engagement_id"]) if row["engagement_id"] else None,
        "internet_message_id": row["internet_message_id"], "created_at": row["created_at"].isoformat(),
        "sent_at": row["sent_at"].isoformat() if row["sent_at"] else None,
    }


async def post_send(request: web.Request) -> web.Response:
    user_id = request.match_info["user_id"]
    scope = caller(request).account_id
    pool = request.app[POOL]
    sends = Sends(pool)
    account_id = await Directory(pool).live_account_of(user_id, scope)
    if account_id is None:
        return api_error(404, "not_found", "no such user")
    try:
        body = await request.json()
    except (ValueError, UnicodeDecodeError):
        return api_error(400, "bad_request", "the body must be JSON")
    try:
        wanted = parse_send_request(body)
    except SendRequestError as exc:
        return api_error(400, "bad_request", str(exc))
    # A repeat (same user, same key) answers the first send, before any check that could now fail.
    first = await sends.by_key(user_id, wanted.idempotency_key, scope)
    if first is not None:
        return web.json_response({"send_id": str(first["send_id"]), "status": first["status"]}, status=202)
    connection = await MailboxConnections(pool).for_send(user_id, account_id)
    if connection is None or connection["status"] != "connected":
        status = connection["status"] if connection is not None else "never_connected"
        return api_error(409, "not_connected", f"the user's mailbox is {status}: connect it on the Email "
                         "Authentication page first")
    # A tenant-mode mailbox sends with the application's Mail.Send, which the administrator's consent covers
    # (Graph refuses, and the send fails with the reason, if the app registration lacks it).
    if connection["mode"] != "tenant" and not _granted_send(list(connection["scopes"])):
        return api_error(409, "mail_send_not_granted", "the user's connection does not include the Mail.Send "
                         "permission: reconnect on the Email Authentication page and allow sending mail")
    send_id = str(uuid.uuid4())
    imid = internet_message_id_for(send_id, connection["mailbox_address"] or "")
    inserted = await sends.add(
        send_id=send_id, account_id=account_id, user_id=user_id, connection_id=connection["connection_id"],
        idempotency_key=wanted.idempotency_key, internet_message_id=imid, to=list(wanted.to), cc=list(wanted.cc),
        recipient_count=wanted.recipient_count, subject=wanted.subject, body=wanted.body,
        body_type=wanted.body_type)
    if not inserted:  # the same key raced in from a concurrent request: answer that one
        send_id = await sends.id_for_key(user_id, wanted.idempotency_key)
    return web.json_response({"send_id": send_id, "status": "queued"}, status=202)


async def get_send(request: web.Request) -> web.Response:
    try:
        send_id = str(uuid.UUID(request.match_info["send_id"]))
    except ValueError:
        return api_error(404, "not_found", "no such send")
    row = await Sends(request.app[POOL]).by_id(send_id, caller(request).account_id)
    if row is None:
        return api_error(404, "not_found", "no such send")
    return web.json_response(_view(row))


def add_send_routes(app: web.Application) -> None:
    app.router.add_post("/api/v1/users/{user_id}/send", post_send)
    app.router.add_get("/api/v1/sends/{send_id}", get_send)

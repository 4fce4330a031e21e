"""The control API under `/sandbox/...` (docs/contract.md#sandbox): mailboxes, mail, revocations,
tenant policies, faults, lifecycle events, tokens, subscriptions, the clock, stats, reset.

`POST /sandbox/users/{id}/revoke {"reason"}` follows Microsoft's sequence for the reason given:
- refresh tokens (and codes) issued so far fail with the reason's AADSTS code (identity.py);
- `password_reset`: Outlook removes the subscriptions the user's *delegated* tokens created and sends
  `subscriptionRemoved` to each that has a lifecycleNotificationUrl (Microsoft 365 dev blog "Subscription
  lifetime changes for Outlook resources", 2019; microsoft-graph-docs-contrib
  change-notifications-lifecycle-events); app-only subscriptions stay;
- access tokens keep working until they expire, except cp1 tokens for the CAE critical events
  (`password_reset`, `mfa_required`), which Graph now challenges (tokens.py, graph_core.py).
The answer counts them: `access_tokens_live`, `access_tokens_challenged`, `subscriptions_removed`.

Errors are 4xx `{"error": {"code", "message"}}` with codes `bad_request` (400) and `not_found` (404).
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from mailsync_sandbox import client_assertion
from mailsync_sandbox import faults as fault_config
from mailsync_sandbox.mailstore import InputError
from mailsync_sandbox.model import Mailbox, Message
from mailsync_sandbox.state import SANDBOX, Sandbox
from mailsync_sandbox.timefmt import graph_time
from mailsync_sandbox.tokens import normalize_scopes

GRAPH_EXPLORER_APP_ID = "de8bc8b5-d9f9-48b1-a8ad-b748da725064"
REVOKE_REASONS = ("password_reset", "inactive", "mfa_required")
LIFECYCLE_EVENTS = ("reauthorizationRequired", "subscriptionRemoved", "missed")

routes = web.RouteTableDef()


def error(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"error": {"code": code, "message": message}}, status=status)


class _Problem(Exception):
    def __init__(self, response: web.Response) -> None:
        super().__init__(response.status)
        self.response = response


async def _body(request: web.Request) -> dict[str, Any]:
    if not request.can_read_body:
        return {}
    try:
        body = json.loads(await request.read() or b"{}")
    except ValueError:
        raise _Problem(error(400, "bad_request", "the body must be JSON")) from None
    if not isinstance(body, dict):
        raise _Problem(error(400, "bad_request", "the body must be a JSON object"))
    return body


def _sb(request: web.Request) -> Sandbox:
    return request.app[SANDBOX]


def _mailbox(request: web.Request) -> Mailbox:
    found = _sb(request).mail.get(request.match_info["user_id"])
    if found is None:
        raise _Problem(error(404, "not_found", f"no mailbox {request.match_info['user_id']!r}"))
    return found


def _message(request: web.Request, mailbox: Mailbox) -> Message:
    found = mailbox.messages.get(request.match_info["message_id"])
    if found is None:
        raise _Problem(error(404, "not_found", f"no message {request.match_info['message_id']!r}"))
    return found


@web.middleware
async def problems(request: web.Request, handler: Any) -> web.StreamResponse:
    try:
        response: web.StreamResponse = await handler(request)
    except _Problem as exc:
        return exc.response
    except (InputError, fault_config.FaultError) as exc:
        return error(400, "bad_request", str(exc))
    return response


def _folder_path(mailbox: Mailbox, folder_id: str) -> str:
    parts = []
    folder = mailbox.folders.get(folder_id)
    while folder is not None and folder.id != mailbox.root_id:
        parts.append(folder.display_name)
        folder = mailbox.folders.get(folder.parent_id)
    return "/".join(reversed(parts))


def mailbox_json(mailbox: Mailbox, *, folders: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {
        "user_id": mailbox.user_id, "tenant_id": mailbox.tenant_id, "address": mailbox.address,
        "aliases": mailbox.aliases, "display_name": mailbox.display_name, "auto_consent": mailbox.auto_consent,
        "shared": mailbox.shared, "message_count": len(mailbox.messages),
    }
    if folders:
        out["folders"] = [{"id": f.id, "display_name": f.display_name, "well_known_name": f.well_known,
                           "path": _folder_path(mailbox, f.id), "total": mailbox.count_in(f.id)[0]}
                          for f in mailbox.folders.values() if f.id != mailbox.root_id]
    return out


def _message_json(mailbox: Mailbox, message: Message) -> dict[str, Any]:
    return {"id": message.id, "folder_id": message.folder_id, "folder": _folder_path(mailbox, message.folder_id),
            "internet_message_id": message.internet_message_id, "conversation_id": message.conversation_id,
            "subject": message.subject, "received_at": graph_time(message.received)}


@routes.get("/sandbox/healthz")
async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


@routes.post("/sandbox/mailboxes")
async def put_mailbox(request: web.Request) -> web.Response:
    body = await _body(request)
    shared = body.pop("shared", False)
    if not isinstance(shared, bool):
        return error(400, "bad_request", "shared must be a boolean")
    mailbox, created = _sb(request).mail.upsert_mailbox(body)
    mailbox.shared = shared  # no sign-in; application permissions only (identity.py, app_access.py)
    return web.json_response(mailbox_json(mailbox, folders=True), status=201 if created else 200)


@routes.post("/sandbox/apps/{client_id}/certificates")
async def register_certificate(request: web.Request) -> web.Response:
    """`{"pem"}`: a certificate the application signs client assertions with (client_assertion.py)."""
    pem = (await _body(request)).get("pem")
    if not isinstance(pem, str) or not pem.strip():
        return error(400, "bad_request", "pem (a PEM certificate) is required")
    try:
        cert = client_assertion.register(pem)
    except ValueError as exc:
        return error(400, "bad_request", str(exc))
    client_id = request.match_info["client_id"]
    certs = _sb(request).tokens.app_certificates.setdefault(client_id, [])
    if all(c.sha256 != cert.sha256 for c in certs):
        certs.append(cert)
    return web.json_response({"client_id": client_id, "thumbprint_sha256": cert.sha256, "thumbprint": cert.sha1,
                              "certificates": len(certs)}, status=201)


@routes.get("/sandbox/mailboxes")
async def list_mailboxes(request: web.Request) -> web.Response:
    return web.json_response({"value": [mailbox_json(m) for m in _sb(request).mail.mailboxes.values()]})


@routes.get("/sandbox/mailboxes/{user_id}")
async def get_mailbox(request: web.Request) -> web.Response:
    return web.json_response(mailbox_json(_mailbox(request), folders=True))


@routes.post("/sandbox/mailboxes/{user_id}/messages")
async def deliver(request: web.Request) -> web.Response:
    mailbox = _mailbox(request)
    message = _sb(request).mail.deliver(mailbox, await _body(request))
    return web.json_response(_message_json(mailbox, message), status=201)


@routes.get("/sandbox/mailboxes/{user_id}/messages")
async def list_messages(request: web.Request) -> web.Response:
    mailbox = _mailbox(request)
    return web.json_response({"value": [_message_json(mailbox, m) for m in mailbox.messages.values()]})


@routes.post("/sandbox/mailboxes/{user_id}/messages/{message_id}/move")
async def move(request: web.Request) -> web.Response:
    mailbox = _mailbox(request)
    message, body = _message(request, mailbox), await _body(request)
    if not isinstance(body.get("folder"), str) or not body["folder"]:
        return error(400, "bad_request", "folder is required")
    _sb(request).mail.move(mailbox, message, body["folder"])
    return web.json_response(_message_json(mailbox, message))


@routes.patch("/sandbox/mailboxes/{user_id}/messages/{message_id}")
async def update(request: web.Request) -> web.Response:
    mailbox = _mailbox(request)
    message = _message(request, mailbox)
    _sb(request).mail.update(mailbox, message, await _body(request))
    return web.json_response(_message_json(mailbox, message))


@routes.delete("/sandbox/mailboxes/{user_id}/messages/{message_id}")
async def delete(request: web.Request) -> web.Response:
    mailbox = _mailbox(request)
    _sb(request).mail.delete(mailbox, _message(request, mailbox))
    return web.Response(status=204)


@routes.post("/sandbox/users/{user_id}/revoke")
async def revoke(request: web.Request) -> web.Response:
    sb, mailbox = _sb(request), _mailbox(request)
    reason = (await _body(request)).get("reason", "password_reset")
    if reason not in REVOKE_REASONS:
        return error(400, "bad_request", f"reason must be one of {', '.join(REVOKE_REASONS)}")
    live, challenged = sb.tokens.revoke(mailbox.user_id, reason)
    removed = []
    if reason == "password_reset":
        for sub in sb.subscriptions.for_user(mailbox.user_id):
            if sub.delegated:
                sb.notifier.lifecycle(sub, "subscriptionRemoved")
                sb.subscriptions.remove(sub.id)
                removed.append(sub.id)
    return web.json_response({"user_id": mailbox.user_id, "reason": reason, "access_tokens_live": live,
                              "access_tokens_challenged": challenged, "subscriptions_removed": removed})


TENANT_FLAGS = ("admin_consent_required", "conditional_access_block", "auto_admin_consent", "revoke_admin_consent")
TENANT_LISTS = ("application_access_policy", "verified_domains")  # a list of strings, or null to clear
TENANT_POLICIES = TENANT_FLAGS + TENANT_LISTS


def _policy_problem(body: dict[str, Any]) -> str | None:
    if not body or any(k not in TENANT_POLICIES for k in body):
        return f"give one or more of {', '.join(TENANT_POLICIES)}"
    for key, value in body.items():
        if key in TENANT_FLAGS and not isinstance(value, bool):
            return f"{key} must be a boolean"
        if key in TENANT_LISTS and value is not None and (
                not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value)):
            return f"{key} must be a list of strings or null"
    return None


@routes.post("/sandbox/tenants/{tenant_id}/policy")
async def policy(request: web.Request) -> web.Response:
    """Any of the booleans `admin_consent_required`, `conditional_access_block`, `auto_admin_consent` (the
    admin consent page returns at once), `revoke_admin_consent` (true: every application's admin consent is
    withdrawn now; its app-only tokens stop working) and the lists `application_access_policy` (addresses
    app-only calls may reach; null: all) and `verified_domains` (null: the domains of the tenant's
    mailboxes). What is not given stays."""
    tenant_id = request.match_info["tenant_id"]
    body = await _body(request)
    problem = _policy_problem(body)
    if problem is not None:
        return error(400, "bad_request", problem)
    tokens, key = _sb(request).tokens, tenant_id.lower()
    flags = {"admin_consent_required": tokens.admin_consent_required,
             "conditional_access_block": tokens.conditional_access_block,
             "auto_admin_consent": tokens.auto_admin_consent}
    lists = {"application_access_policy": tokens.access_policy, "verified_domains": tokens.verified_domains}
    revoked = 0
    for name, value in body.items():
        if name == "revoke_admin_consent":
            revoked = tokens.revoke_admin_consent(tenant_id) if value else 0
        elif name in flags:
            flags[name][key] = value
        elif value is None:
            lists[name].pop(key, None)
        else:
            lists[name][key] = [v.strip().lower() for v in value]
    return web.json_response({"tenant_id": tenant_id, **{k: v.get(key, False) for k, v in flags.items()},
                              **{k: v.get(key) for k, v in lists.items()}, "admin_consents_revoked": revoked})


@routes.get("/sandbox/clock")
async def get_clock(request: web.Request) -> web.Response:
    return web.json_response(_sb(request).clock.as_json())


@routes.post("/sandbox/clock")
async def set_clock(request: web.Request) -> web.Response:
    """`{"speed": N}` (N >= 1) and/or `{"advance_s": S}` (S >= 0): see clock.py."""
    clock, body = _sb(request).clock, await _body(request)
    unknown = set(body) - {"speed", "advance_s"}
    if unknown or not body:
        return error(400, "bad_request", "give speed (>= 1) and/or advance_s (>= 0)")
    for key in ("speed", "advance_s"):
        value = body.get(key)
        if key in body and (isinstance(value, bool) or not isinstance(value, int | float)):
            return error(400, "bad_request", f"{key} must be a number")
    try:
        if "speed" in body:
            clock.set_speed(float(body["speed"]))
        if "advance_s" in body:
            clock.advance(float(body["advance_s"]))
    except ValueError as exc:
        return error(400, "bad_request", str(exc))
    return web.json_response(clock.as_json())


@routes.get("/sandbox/faults")
async def get_faults(request: web.Request) -> web.Response:
    return web.json_response(_sb(request).faults.as_json())


@routes.post("/sandbox/faults")
async def set_faults(request: web.Request) -> web.Response:
    sb = _sb(request)
    sb.faults = fault_config.apply(sb.faults, await _body(request))
    return web.json_response(sb.faults.as_json())


@routes.post("/sandbox/lifecycle")
async def lifecycle(request: web.Request) -> web.Response:
    sb, body = _sb(request), await _body(request)
    event = body.get("event")
    if event not in LIFECYCLE_EVENTS:
        return error(400, "bad_request", f"event must be one of {', '.join(LIFECYCLE_EVENTS)}")
    sub = sb.subscriptions.get(str(body.get("subscription_id", "")))
    if sub is None:
        return error(404, "not_found", f"no live subscription {body.get('subscription_id')!r}")
    sent = sb.notifier.lifecycle(sub, event)
    if event == "reauthorizationRequired":
        sub.paused = True
    elif event == "subscriptionRemoved":
        sb.subscriptions.remove(sub.id)
    return web.json_response({"subscription_id": sub.id, "event": event, "sent": sent}, status=202)


@routes.post("/sandbox/tokens")
async def tokens(request: web.Request) -> web.Response:
    sb, body = _sb(request), await _body(request)
    mailbox = sb.mail.get(str(body.get("user_id", "")))
    if mailbox is None:
        return error(404, "not_found", f"no mailbox {body.get('user_id')!r}")
    if mailbox.shared:
        return error(400, "bad_request", "a shared mailbox has no sign-in: use application permissions")
    raw = body.get("scopes") or ["User.Read", "Mail.Read"]
    if not isinstance(raw, list) or not all(isinstance(s, str) for s in raw):
        return error(400, "bad_request", "scopes must be a list of strings")
    client_id = str(body.get("client_id") or GRAPH_EXPLORER_APP_ID)
    cp1 = body.get("cp1", False)
    if not isinstance(cp1, bool):
        return error(400, "bad_request", "cp1 must be a boolean")
    grant = sb.tokens.grant(mailbox.user_id, mailbox.tenant_id, client_id, normalize_scopes(raw))
    token, lifetime = sb.tokens.issue_access(grant, sb.faults.access_token_lifetime_s, name=mailbox.display_name,
                                             upn=mailbox.address, cp1=cp1)
    return web.json_response({"access_token": token, "token_type": "Bearer", "expires_in": lifetime,
                              "scope": " ".join(grant.scopes)})


@routes.get("/sandbox/subscriptions")
async def subscriptions(request: web.Request) -> web.Response:
    return web.json_response({"value": [s.control() for s in _sb(request).subscriptions.live()]})


@routes.post("/sandbox/subscriptions/{subscription_id}/expire")
async def expire(request: web.Request) -> web.Response:
    """Let a subscription run out now (Graph then answers 404 for it), without waiting 45 minutes."""
    sb = _sb(request)
    sub = sb.subscriptions.get(request.match_info["subscription_id"])
    if sub is None:
        return error(404, "not_found", "no live subscription with that id")
    sub.expires_at = sb.clock.now()
    return web.json_response({"subscription_id": sub.id, "expired": True})


@routes.get("/sandbox/stats")
async def stats(request: web.Request) -> web.Response:
    sb = _sb(request)
    return web.json_response(sb.stats.as_json(pending=sb.notifier.pending(), in_flight=sb.notifier.in_flight()))


@routes.post("/sandbox/reset")
async def reset(request: web.Request) -> web.Response:
    await _sb(request).reset()
    return web.json_response({"reset": True})

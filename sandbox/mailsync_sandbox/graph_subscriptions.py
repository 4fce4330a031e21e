"""Graph subscriptions: create (with the validation handshake), get, list, renew, delete, reauthorize.

Create checks what Graph checks: `changeType` (created, updated, deleted, comma-separated),
`notificationUrl` / `lifecycleNotificationUrl` (absolute; the sandbox also accepts http, Graph wants
https), `resource` (`/me/messages`, `/users/{id}/messages`, `.../mailFolders('{folder}')/messages`, the
token's own mailbox only), `expirationDateTime` (at most 10,080 minutes ahead, else 400 `ExtensionError`
"Subscription expiration can only be 10080 minutes in the future." as Graph answers; under 45 minutes
is raised to 45), `clientState` (at most 128 characters), `latestSupportedTlsVersion`. At most 1,000
live subscriptions per mailbox. Then, for each URL, the handshake: `POST url?validationToken=...`
(`text/plain`, 10 s) must answer 200, `text/plain`, the decoded token; otherwise 400 `InvalidRequest`.

PATCH renews and reauthorizes (resumes delivery paused by `reauthorizationRequired`); changing
`lifecycleNotificationUrl` is refused. `POST /subscriptions/{id}/reauthorize` reauthorizes without
extending (204). Either records the calling access token's expiry on the subscription: Graph's own
`reauthorizationRequired` timer (lifecycle.py) runs against it, so reauthorizing with a fresh token
stops the notifications until that token nears expiry in turn. Missing, expired or another
application's subscriptions are 404 `ResourceNotFound`. Expiry is judged on the sandbox clock.

Responses carry `notificationContentType: "application/json"` as Graph's subscription resource does
(microsoft-graph-docs-contrib, resources/subscription.md).
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import quote

import aiohttp
from yarl import URL

from mailsync_sandbox import app_access
from mailsync_sandbox.graph_core import GraphCall, GraphResponse, graph_error, route
from mailsync_sandbox.paths import split_path
from mailsync_sandbox.subscription_store import MAX_PER_MAILBOX, Subscription
from mailsync_sandbox.timefmt import parse_time
from mailsync_sandbox.tokens import MAIL_READ_SCOPES

CHANGE_TYPES = ("created", "updated", "deleted")
TLS_VERSIONS = ("v1_0", "v1_1", "v1_2", "v1_3")
MAX_MINUTES, MIN_MINUTES = 10_080, 45
VALIDATION_TIMEOUT_S = 10.0


def _invalid(message: str) -> GraphResponse:
    return graph_error(400, "InvalidRequest", message)


def _url_ok(value: Any) -> bool:
    if not isinstance(value, str):
        return False
    try:
        url = URL(value)
    except ValueError:
        return False
    return url.scheme == "https" and bool(url.host)  # Graph delivers only to HTTPS endpoints


def _expiry(call: GraphCall, value: Any) -> datetime | GraphResponse:
    if not isinstance(value, str):
        return _invalid("expirationDateTime is required.")
    try:
        at = parse_time(value)
    except ValueError:
        return _invalid(f"Invalid expirationDateTime '{value[:60]}'.")
    now = call.sb.clock.now()
    minutes = (at - now).total_seconds() / 60
    if minutes <= 0:
        return _invalid("Subscription expiration must be in the future.")
    if minutes > MAX_MINUTES + 1:
        return graph_error(400, "ExtensionError", f"Subscription expiration can only be {MAX_MINUTES} minutes in "
                                                  "the future.")
    return max(at, now + timedelta(minutes=MIN_MINUTES))


def _resource(call: GraphCall, resource: Any) -> tuple[str, str | None] | GraphResponse:
    """(user id, folder id or None) of a messages resource the token may watch."""
    if not isinstance(resource, str) or not resource.strip():
        return _invalid("resource is required.")
    segments = split_path(resource)
    head = segments[0].lower() if segments else ""
    assert call.token is not None
    app_only = call.token.grant.app_only
    mailbox = (None if app_only else call.me()) if head == "me" else call.sb.mail.get(segments[1]) \
        if head == "users" and len(segments) > 1 else None
    rest = [s.lower() for s in segments[1 if head == "me" else 2:]]
    if head not in ("me", "users") or not (rest == ["messages"] or (
            len(rest) == 3 and rest[0] == "mailfolders" and rest[2] == "messages")):
        return _invalid(f"Unsupported resource '{resource[:200]}': the sandbox supports messages of a mailbox "
                        "or of one mail folder.")
    forbidden = graph_error(403, "ExtensionError", "Operation: Create; Exception: [Status Code: Forbidden; "
                                                   "Reason: Access is denied. Check credentials and try again.]")
    if app_only:  # application permissions: any mailbox of the tenant inside the access policy
        if mailbox is None or not app_access.may_subscribe(call, mailbox, call.token):
            return forbidden
    elif (mailbox is None or mailbox.user_id != call.token.grant.user_id
          or not {s.lower() for s in call.token.grant.scopes} & MAIL_READ_SCOPES):
        return forbidden
    if len(rest) == 1:
        return mailbox.user_id, None
    folder = mailbox.resolve_folder(segments[-2])
    if folder is None:
        return graph_error(404, "ResourceNotFound", f"The mail folder '{segments[-2][:100]}' was not found.")
    return mailbox.user_id, folder.id


async def handshake(session: aiohttp.ClientSession, url: str) -> str | None:
    """None when `url` answered the validation request correctly, else why not."""
    token = f"Validation: Testing client application reachability for subscription Request-Id: {uuid.uuid4()} " \
            "(odd chars: +&=%/?#)"
    target = f"{url}{'&' if '?' in url else '?'}validationToken={quote(token, safe='')}"
    try:
        async with session.post(URL(target, encoded=True), data=b"",
                                headers={"Content-Type": "text/plain; charset=utf-8"},
                                timeout=aiohttp.ClientTimeout(total=VALIDATION_TIMEOUT_S)) as resp:
            raw = await resp.read()
            if resp.status != 200:
                return f"Notification endpoint must respond with 200 OK to validation request (got {resp.status})."
            if resp.content_type != "text/plain":
                return f"Response Content-Type must be text/plain (got {resp.content_type})."
            if raw.decode("utf-8", errors="replace") != token:
                return "Response must exactly match validationToken query parameter."
    except TimeoutError:
        return "Subscription validation request timed out."
    except (aiohttp.ClientError, OSError) as exc:
        return f"The notification endpoint could not be reached ({type(exc).__name__})."
    return None


async def _validated(call: GraphCall, *urls: str | None) -> GraphResponse | None:
    session = call.sb.notifier.session
    assert session is not None
    for url in urls:
        if url:
            problem = await handshake(session, url)
            if problem is not None:
                return _invalid(f"Subscription validation request failed. {problem}")
    return None


def _entity(call: GraphCall, sub: Subscription, status: int = 200) -> GraphResponse:
    context = f"{call.graph_base}/$metadata#subscriptions/$entity"
    return GraphResponse(status, {"@odata.context": context, **sub.graph()})


@route("POST", "subscriptions", "app")
async def create(call: GraphCall) -> GraphResponse:
    body = call.body
    if not isinstance(body, dict):
        return graph_error(400, "BadRequest", "Empty Payload. JSON content expected.")
    raw_types = body.get("changeType")
    types = [t.strip() for t in raw_types.split(",")] if isinstance(raw_types, str) else []
    bad = [t for t in types if t not in CHANGE_TYPES]
    if not types or bad:
        return _invalid(f"Invalid 'changeType' attribute: '{bad[0] if bad else raw_types}'.")
    if not _url_ok(body.get("notificationUrl")):
        return _invalid("NotificationUrl must be an absolute https URL.")
    lifecycle = body.get("lifecycleNotificationUrl")
    if lifecycle is not None and not _url_ok(lifecycle):
        return _invalid("LifecycleNotificationUrl must be an absolute https URL.")
    client_state = body.get("clientState")
    if client_state is not None and (not isinstance(client_state, str) or len(client_state) > 128):
        return _invalid("clientState must be a string of at most 128 characters.")
    tls = body.get("latestSupportedTlsVersion") or "v1_2"
    if tls not in TLS_VERSIONS:
        return _invalid(f"Invalid latestSupportedTlsVersion '{str(tls)[:20]}'.")
    if body.get("includeResourceData"):
        return _invalid("includeResourceData (rich notifications) is not supported by the sandbox.")
    expires = _expiry(call, body.get("expirationDateTime"))
    if isinstance(expires, GraphResponse):
        return expires
    target = _resource(call, body.get("resource"))
    if isinstance(target, GraphResponse):
        return target
    user_id, folder_id = target
    if call.sb.subscriptions.count_for(user_id) >= MAX_PER_MAILBOX:
        return graph_error(403, "ExtensionError", "Operation: Create; Exception: [Status Code: Forbidden; Reason: "
                           f"The mailbox has reached its limit of {MAX_PER_MAILBOX} subscriptions.]")
    failed = await _validated(call, body["notificationUrl"], lifecycle)
    if failed is not None:
        return failed
    token = call.token
    assert token is not None
    sub = Subscription(
        id=str(uuid.uuid4()), resource=body["resource"], user_id=user_id, tenant_id=token.grant.tenant_id,
        folder_id=folder_id, change_types=tuple(t for t in CHANGE_TYPES if t in types),
        notification_url=body["notificationUrl"], lifecycle_url=lifecycle, client_state=client_state,
        expires_at=expires, application_id=token.grant.client_id, creator_id=token.grant.user_id, tls_version=tls,
        delegated=not token.grant.app_only)
    sub.authorize_with(token.expires_at, token.expires_at - token.issued_at)
    call.sb.subscriptions.add(sub)
    call.sb.lifecycle.poke()
    return _entity(call, sub, 201)


def _own(call: GraphCall) -> Subscription | GraphResponse:
    sub = call.sb.subscriptions.get(call.args[0])
    token = call.token
    assert token is not None
    if sub is None or sub.application_id != token.grant.client_id or sub.creator_id != token.grant.user_id:
        return graph_error(404, "ResourceNotFound", f"The object '{call.args[0][:60]}' was not found.")
    return sub


@route("GET", "subscriptions/*", "app")
async def get(call: GraphCall) -> GraphResponse:
    sub = _own(call)
    return sub if isinstance(sub, GraphResponse) else _entity(call, sub)


@route("GET", "subscriptions", "app")
async def list_all(call: GraphCall) -> GraphResponse:
    token = call.token
    assert token is not None
    mine = [s.graph() for s in call.sb.subscriptions.live()
            if s.application_id == token.grant.client_id and s.creator_id == token.grant.user_id]
    return GraphResponse(200, {"@odata.context": f"{call.graph_base}/$metadata#subscriptions", "value": mine})


@route("PATCH", "subscriptions/*", "app")
async def renew(call: GraphCall) -> GraphResponse:
    sub = _own(call)
    if isinstance(sub, GraphResponse):
        return sub
    body = call.body if isinstance(call.body, dict) else {}
    if "lifecycleNotificationUrl" in body and body["lifecycleNotificationUrl"] != sub.lifecycle_url:
        return _invalid("lifecycleNotificationUrl cannot be added or changed: delete the subscription and create "
                        "a new one.")
    expires = _expiry(call, body["expirationDateTime"]) if "expirationDateTime" in body else None
    if isinstance(expires, GraphResponse):
        return expires
    url = body.get("notificationUrl")
    if url is not None and url != sub.notification_url:
        if not _url_ok(url):
            return _invalid("NotificationUrl must be an absolute https URL.")
        failed = await _validated(call, url)
        if failed is not None:
            return failed
        sub.notification_url = url
    if expires is not None:
        sub.expires_at = expires
    assert call.token is not None
    sub.authorize_with(call.token.expires_at, call.token.expires_at - call.token.issued_at)
    call.sb.lifecycle.poke()
    call.sb.stats.mailboxes[sub.user_id].subscription_renewals += 1
    return _entity(call, sub)


@route("DELETE", "subscriptions/*", "app")
async def delete(call: GraphCall) -> GraphResponse:
    sub = _own(call)
    if isinstance(sub, GraphResponse):
        return sub
    call.sb.subscriptions.remove(sub.id)
    return GraphResponse(204)


@route("POST", "subscriptions/*/reauthorize", "app")
async def reauthorize(call: GraphCall) -> GraphResponse:
    sub = _own(call)
    if isinstance(sub, GraphResponse):
        return sub
    assert call.token is not None
    sub.authorize_with(call.token.expires_at, call.token.expires_at - call.token.issued_at)
    call.sb.lifecycle.poke()
    call.sb.stats.mailboxes[sub.user_id].subscription_reauthorizations += 1
    return GraphResponse(204)

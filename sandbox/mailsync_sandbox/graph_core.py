"""The Graph request pipeline shared by plain requests and `$batch` steps: bearer token, route,
mailbox access, throttling, then the handler. Handlers return a `GraphResponse`, never raise HTTP.

Access rules (delegated tokens): a mailbox path (`/me/...` or `/users/{id or address}/...`) must be
the token's own user (else 403 `ErrorAccessDenied`; 403 `Authorization_RequestDenied` for another
user's profile) and mail needs a `Mail.Read`-family scope. Unknown users: 404 `ErrorInvalidUser`
(mail) or `Request_ResourceNotFound` (profile). Throttling keys on (application, mailbox).

Claims challenges (entra-docs claims-challenge, app-resilience-continuous-access-evaluation), for
tokens of clients that declared `cp1` only (tokens.py):
- the user was revoked (password reset, MFA required) after the token was issued: `401`,
  `WWW-Authenticate: Bearer realm="", authorization_uri="…/common/oauth2/authorize", error="insufficient_claims",
  claims="<base64 {"access_token":{"nbf":{"essential":true,"value":"<revocation epoch>"}}}>"`, body code
  `InvalidAuthenticationToken` (what Graph answers, "…ClaimsChallengeRequiredException…" in real captures);
- the tenant's Conditional Access now blocks the user: `403` with the same kind of challenge and body
  code `InsufficientClaims` (docs/contract.md#sandbox: Conditional Access answers 403 `insufficient_claims`;
  the challenge asks for a fresh token, which the token endpoint then refuses with AADSTS53003).
Without cp1 both kinds of token keep working until they expire.

App-only tokens (application permissions) follow app_access.py; one issued before its tenant's admin
consent was revoked answers 401 at once.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from mailsync_sandbox.model import Mailbox
from mailsync_sandbox.odata import ODataError
from mailsync_sandbox.state import Sandbox
from mailsync_sandbox.tokens import MAIL_READ_SCOPES, AccessToken, challenge_claims, graph_scopes

GRAPH_CONTENT_TYPE = "application/json;odata.metadata=minimal;odata.streaming=true;IEEE754Compatible=false;" \
                     "charset=utf-8"
PROFILE_SCOPES = frozenset({"user.read", "user.readbasic.all", "user.read.all"})
ME = "\0me"
WWW_AUTHENTICATE = ('Bearer realm="", authorization_uri="https://login.microsoftonline.com/common/oauth2/authorize",'
                    ' client_id="00000003-0000-0000-c000-000000000000"')


@dataclass
class GraphResponse:
    status: int
    body: dict[str, Any] | None = None
    headers: dict[str, str] = field(default_factory=dict)

    def encode(self) -> bytes:
        return json.dumps(self.body).encode() if self.body is not None else b""


def graph_error(status: int, code: str, message: str, headers: dict[str, str] | None = None, *,
                inner_code: str | None = None) -> GraphResponse:
    """Graph's error shape; `inner_code` nests the specific code in `error.innerError.code` below a generic
    `code`, as Graph does for some workloads (the delta sync-state errors here)."""
    request_id = str(uuid.uuid4())
    inner: dict[str, Any] = {"date": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S"), "request-id": request_id,
                             "client-request-id": request_id}
    if inner_code is not None:
        inner = {"code": inner_code, **inner}
    body = {"error": {"code": code, "message": message, "innerError": inner}}
    return GraphResponse(status, body, headers or {})


@dataclass
class GraphCall:
    sb: Sandbox
    method: str
    segments: list[str]
    query: Mapping[str, str]
    headers: Mapping[str, str]
    body: Any
    base_url: str  # scheme://host of this sandbox, for absolute links
    token: AccessToken | None = None
    mailbox: Mailbox | None = None
    args: list[str] = field(default_factory=list)

    @property
    def graph_base(self) -> str:
        return f"{self.base_url}/v1.0"

    def me(self) -> Mailbox:
        assert self.mailbox is not None
        return self.mailbox


Handler = Callable[[GraphCall], Awaitable[GraphResponse]]


@dataclass(frozen=True)
class Route:
    method: str
    pattern: tuple[str, ...]  # lower-case literals; "*" matches one segment (collected into call.args)
    handler: Handler
    scope: str  # "mail" | "profile" | "app" (subscriptions: the token's own mailbox)


ROUTES: list[Route] = []


def route(method: str, path: str, scope: str) -> Callable[[Handler], Handler]:
    """Register a handler; `path` after the mailbox prefix (for mail/profile) like "mailfolders/*/messages"."""
    def register(handler: Handler) -> Handler:
        ROUTES.append(Route(method, tuple(p for p in path.split("/") if p), handler, scope))
        return handler
    return register


def _match(pattern: tuple[str, ...], segments: list[str]) -> list[str] | None:
    if len(pattern) != len(segments):
        return None
    args = []
    for want, got in zip(pattern, segments, strict=True):
        if want == "*":
            args.append(got)
        elif want != got.lower():
            return None
    return args


def _find(method: str, segments: list[str]) -> tuple[Route | None, str | None, list[str], bool]:
    """(route, mailbox reference, args, path known for another method)."""
    head = segments[0].lower() if segments else ""
    if head == "me":
        ref, rest = ME, segments[1:]
    elif head == "users" and len(segments) > 1:
        ref, rest = segments[1], segments[2:]
    else:
        ref, rest = None, segments
    other_method = False
    best: tuple[Route, list[str]] | None = None
    for candidate in ROUTES:
        if (candidate.scope == "app") != (ref is None):
            continue
        args = _match(candidate.pattern, rest)
        if args is None:
            continue
        if candidate.method != method:
            other_method = True
        elif best is None or len(args) < len(best[1]):  # literal segments win over wildcards
            best = (candidate, args)
    if best is not None:
        return best[0], ref, best[1], False
    return None, ref, [], other_method


def claims_challenge(nbf: float) -> str:
    """The `WWW-Authenticate` value of a claims challenge (entra-docs claims-challenge)."""
    return ('Bearer realm="", authorization_uri="https://login.microsoftonline.com/common/oauth2/authorize", '
            f'error="insufficient_claims", claims="{challenge_claims(nbf)}"')


def authenticate(sb: Sandbox, headers: Mapping[str, str]) -> AccessToken | GraphResponse:
    scheme, _, value = headers.get("Authorization", "").strip().partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return graph_error(401, "InvalidAuthenticationToken", "Access token is empty.",
                           {"WWW-Authenticate": WWW_AUTHENTICATE})
    token, problem = sb.tokens.check_access(value.strip())
    if token is None:
        return graph_error(401, "InvalidAuthenticationToken", "IDX14100: JWT is not well formed or is unknown.",
                           {"WWW-Authenticate": WWW_AUTHENTICATE})
    if problem == "revoked":
        revocation = sb.tokens.revoked(token.grant)
        nbf = revocation.at if revocation is not None else sb.clock.time()
        return graph_error(401, "InvalidAuthenticationToken", "Continuous access evaluation resulted in challenge "
                           "with result: InteractionRequired and code: TokenIssuedBeforeRevocationTimestamp",
                           {"WWW-Authenticate": claims_challenge(nbf)})
    if problem == "policy":
        return graph_error(403, "InsufficientClaims", "Continuous access evaluation resulted in challenge with "
                           "result: InteractionRequired and code: BlockedByConditionalAccess (the tenant's "
                           "Conditional Access policy no longer allows this token).",
                           {"WWW-Authenticate": claims_challenge(sb.clock.time())})
    if problem == "app_revoked":
        return graph_error(401, "InvalidAuthenticationToken", "Continuous access evaluation resulted in challenge "
                           "with result: InteractionRequired and code: ServicePrincipalDeleted (the tenant's "
                           "administrator removed the application's consent).", {"WWW-Authenticate": WWW_AUTHENTICATE})
    if problem == "expired":
        return graph_error(401, "InvalidAuthenticationToken", "Lifetime validation failed, the token is expired.",
                           {"WWW-Authenticate": WWW_AUTHENTICATE})
    return token


def _access(call: GraphCall, found: Route, ref: str | None, token: AccessToken) -> Mailbox | GraphResponse | None:
    if token.grant.app_only:
        from mailsync_sandbox import app_access  # its rules import this module's types
        return app_access.resolve(call, found, ref, token)
    sb, scopes = call.sb, {s.lower() for s in graph_scopes(token.grant.scopes)}
    mailbox = sb.mail.mailboxes.get(token.grant.user_id) if ref in (None, ME) else sb.mail.get(ref or "")
    if mailbox is None:
        if found.scope == "profile":
            return graph_error(404, "Request_ResourceNotFound", f"Resource '{ref}' does not exist or one of its "
                               "queried reference-property objects are not present.")
        return graph_error(404, "ErrorInvalidUser", f"The requested user '{ref if ref != ME else 'me'}' is invalid.")
    if found.scope == "app":
        return mailbox
    if found.scope == "profile":
        if mailbox.user_id != token.grant.user_id or not scopes & PROFILE_SCOPES:
            return graph_error(403, "Authorization_RequestDenied", "Insufficient privileges to complete the "
                               "operation.")
    elif mailbox.user_id != token.grant.user_id or not scopes & MAIL_READ_SCOPES:
        return graph_error(403, "ErrorAccessDenied", "Access is denied. Check credentials and try again.")
    return mailbox


async def dispatch(call: GraphCall) -> GraphResponse:
    """One Graph request (or one `$batch` step), start to finish."""
    sb = call.sb
    token = authenticate(sb, call.headers)
    if isinstance(token, GraphResponse):
        return token
    call.token = token
    found, ref, args, other_method = _find(call.method, call.segments)
    if found is None:
        if other_method:
            return graph_error(405, "Request_BadRequest", f"The HTTP method '{call.method}' is not allowed for "
                               "this resource.")
        segment = call.segments[-1] if call.segments else ""
        return graph_error(400, "BadRequest", f"Resource not found for the segment '{segment}'.")
    call.args = args
    mailbox = _access(call, found, ref, token)
    if isinstance(mailbox, GraphResponse):
        return mailbox
    call.mailbox = mailbox
    app_id = token.grant.client_id
    throttle_key = mailbox.user_id if mailbox is not None else token.grant.user_id  # app-only tenant-wide call
    throttled = sb.throttler.enter(app_id, throttle_key, sb.faults.throttle)
    if throttled is not None:
        return graph_error(429, "ApplicationThrottled", throttled.message, {"Retry-After": throttled.header})
    try:
        if sb.faults.graph_latency_ms:
            await asyncio.sleep(sb.faults.graph_latency_ms / 1000)
        return await found.handler(call)
    except ODataError as exc:
        return graph_error(exc.status, exc.code, exc.message)
    finally:
        sb.throttler.leave(app_id, throttle_key)

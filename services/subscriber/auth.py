"""Who calls the service API (docs/contract.md#api-auth, two kinds of bearer).

- `MAILSYNC_API_TOKEN`: the operator, every account (`Caller.account_id` is None).
- an account-scoped token the host application mints: a JWT, HS256, signed with `MAILSYNC_SESSION_SECRET`,
  `aud` = "mailsync-api", `account_id`, `exp` at most 24 h ahead. A session JWT (no `aud`) is not one.

The caller travels in the request; every query of the API filters on `caller.account_id` (see `scoped`),
so a record of another account is not found, exactly like one that does not exist.
"""

from __future__ import annotations

import hmac
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import jwt
from aiohttp import web

from services.subscriber.keys import SETTINGS

API_AUDIENCE = "mailsync-api"
MAX_LIFETIME_S = 24 * 3600
CLOCK_SKEW_S = 60  # a token minted for exactly 24 h by a host whose clock runs a little ahead

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class Caller:
    account_id: str | None  # None: the operator's token, every account

    @property
    def is_operator(self) -> bool:
        return self.account_id is None


OPERATOR = Caller(account_id=None)
CALLER = web.RequestKey("caller", Caller)


class BadToken(Exception):
    """Answered 401 with this message (never the token itself)."""


def caller_from_token(token: str, *, api_token: str, secret: str, now: float | None = None) -> Caller:
    if api_token and hmac.compare_digest(token.encode(), api_token.encode()):
        return OPERATOR
    if token.count(".") != 2:
        raise BadToken("a valid bearer token is required")
    try:
        claims = jwt.decode(token, secret, algorithms=["HS256"], audience=API_AUDIENCE,
                            options={"require": ["aud", "exp", "account_id"]})
    except jwt.ExpiredSignatureError:
        raise BadToken("the API token has expired") from None
    except jwt.MissingRequiredClaimError as exc:
        if exc.claim == "aud":
            raise BadToken("the token has no audience: a session token is not an API token") from None
        raise BadToken(f"the API token has no {exc.claim!r} claim") from None
    except jwt.InvalidAudienceError:
        raise BadToken(f"the API token's audience is not {API_AUDIENCE!r}") from None
    except jwt.PyJWTError:
        raise BadToken("the API token is not valid (bad signature or malformed)") from None
    exp, account_id = claims["exp"], claims["account_id"]
    if (now if now is not None else time.time()) + MAX_LIFETIME_S + CLOCK_SKEW_S < exp:
        raise BadToken("the API token is valid for more than 24 hours; mint tokens that expire sooner")
    if not isinstance(account_id, str) or not account_id:
        raise BadToken("the API token's account_id must be a non-empty string")
    return Caller(account_id=account_id)


def _unauthorized(message: str) -> web.Response:
    return web.json_response({"error": {"code": "unauthorized", "message": message}}, status=401,
                             headers={"WWW-Authenticate": 'Bearer realm="mailsync-api"'})


@web.middleware
async def api_auth(request: web.Request, handler: Handler) -> web.StreamResponse:
    if not request.path.startswith("/api/"):
        return await handler(request)
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme != "Bearer" or not token.strip():
        return _unauthorized("a valid bearer token is required")
    settings = request.app[SETTINGS]
    try:
        request[CALLER] = caller_from_token(token.strip(), api_token=settings.api_token,
                                            secret=settings.session_secret)
    except BadToken as exc:
        return _unauthorized(str(exc))
    return await handler(request)


def caller(request: web.Request) -> Caller:
    """The authenticated caller; a route outside the middleware's reach sees nothing (fails closed)."""
    try:
        return request[CALLER]
    except KeyError:
        raise web.HTTPUnauthorized(text="no authenticated caller") from None

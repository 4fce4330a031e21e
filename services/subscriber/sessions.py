"""User sessions issued by the host application: an HS256 JWT (`sub`, `account_id`, `exp`) passed
once as `?session=`, then kept in an HttpOnly cookie."""

from __future__ import annotations

from dataclasses import dataclass

import jwt
from aiohttp import web

from services.subscriber.keys import SETTINGS

COOKIE = "mailsync_session"


@dataclass(frozen=True)
class Session:
    user_id: str
    account_id: str
    token: str


class SessionError(web.HTTPUnauthorized):
    def __init__(self, message: str) -> None:
        super().__init__(text=f"Your session is missing or expired: {message}. Open this page from the app again.",
                         content_type="text/plain")


def decode_session(token: str, secret: str) -> Session:
    try:
        claims = jwt.decode(token, secret, algorithms=["HS256"], options={"require": ["sub", "exp"]})
    except jwt.PyJWTError as exc:
        raise SessionError(type(exc).__name__) from None
    user_id, account_id = claims.get("sub"), claims.get("account_id")
    if not isinstance(user_id, str) or not isinstance(account_id, str) or not user_id or not account_id:
        raise SessionError("the session names no user or account")
    return Session(user_id=user_id, account_id=account_id, token=token)


def session_from(request: web.Request) -> tuple[Session, bool]:
    """The request's session and whether it came from the query string (then set the cookie)."""
    secret = request.app[SETTINGS].session_secret
    from_query = request.query.get("session")
    if from_query:
        return decode_session(from_query, secret), True
    cookie = request.cookies.get(COOKIE)
    if not cookie:
        raise SessionError("no session")
    return decode_session(cookie, secret), False


def remember(response: web.StreamResponse, request: web.Request, session: Session) -> None:
    response.set_cookie(COOKIE, session.token, httponly=True, samesite="Lax", path="/",
                        secure=request.app[SETTINGS].public_url.startswith("https://"))

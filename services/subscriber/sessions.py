"""User sessions issued by the host application: an HS256 JWT (`sub`, `account_id`, `exp`) passed
once as `?session=`, then kept in an HttpOnly cookie. Also what every page shares: CSRF tokens,
the confirmation asked before a `?session=` replaces another user's session, the page chrome and the
security headers of every response."""

from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import dataclass
from html import escape
from typing import Any

import jwt
from aiohttp import web
from yarl import URL

from services.core.adapters.store.directory import Directory
from services.subscriber.keys import POOL, SETTINGS

COOKIE = "mailsync_session"


@dataclass(frozen=True)
class Session:
    user_id: str
    account_id: str
    token: str
    role: str = "member"  # "admin": an account administrator (the JWT's `role` claim)

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


class SessionError(web.HTTPUnauthorized):
    def __init__(self, message: str) -> None:
        super().__init__(text=f"Your session is missing or expired: {message}. Open this page from the app again.",
                         content_type="text/plain")


def _session(claims: dict[str, Any], token: str) -> Session:
    user_id, account_id = claims.get("sub"), claims.get("account_id")
    if not isinstance(user_id, str) or not isinstance(account_id, str) or not user_id or not account_id:
        raise SessionError("the session names no user or account")
    role = claims.get("role")
    return Session(user_id=user_id, account_id=account_id, token=token,
                   role=role if isinstance(role, str) else "member")


def decode_session(token: str, secret: str) -> Session:
    try:
        claims = jwt.decode(token, secret, algorithms=["HS256"], options={"require": ["sub", "exp"]})
    except jwt.PyJWTError as exc:
        raise SessionError(type(exc).__name__) from None
    return _session(claims, token)


def peek_session(token: str, secret: str) -> Session | None:
    """Whose session a cookie holds, even an expired one (the signature is still checked)."""
    try:
        claims = jwt.decode(token, secret, algorithms=["HS256"], options={"verify_exp": False})
        return _session(claims, token)
    except (jwt.PyJWTError, SessionError):
        return None


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
                        secure=request.app[SETTINGS].app_url.startswith("https://"))


# --- CSRF ----------------------------------------------------------------------------------------


def csrf_token(secret: str, session_token: str) -> str:
    """The CSRF token of a session: every form that changes state, and `/oauth/microsoft365/start`, need it."""
    return hmac.new(secret.encode(), f"csrf:{session_token}".encode(), hashlib.sha256).hexdigest()


def csrf_ok(request: web.Request, session: Session, given: str) -> bool:
    return hmac.compare_digest(given.encode(), csrf_token(request.app[SETTINGS].session_secret, session.token).encode())


def switch_csrf(secret: str, current_token: str, new_token: str) -> str:
    """Tied to both sessions: only a page served to the browser holding `current` can switch it to `new`."""
    return hmac.new(secret.encode(), f"switch:{current_token}:{new_token}".encode(), hashlib.sha256).hexdigest()


# --- whose settings, and switching between users ---------------------------------------------------


async def directory_address(request: web.Request, session: Session) -> str | None:
    """The user's address in the account's directory (`users.email`), None when there is none."""
    return await Directory(request.app[POOL]).email_of(session.user_id, session.account_id)


async def who(request: web.Request, session: Session) -> str:
    """How a page names a user: the directory address, else the user id."""
    address = await directory_address(request, session)
    return address or f"user {session.user_id} (no directory address)"


def current_cookie_session(request: web.Request) -> Session | None:
    cookie = request.cookies.get(COOKIE)
    return peek_session(cookie, request.app[SETTINGS].session_secret) if cookie else None


def other_user(current: Session | None, new: Session) -> bool:
    return current is not None and (current.user_id, current.account_id) != (new.user_id, new.account_id)


async def confirm_switch(request: web.Request, new: Session, *, then: str,
                         login_hint: str | None = None) -> web.Response | None:
    """A page asking before `?session=` replaces another user's session in this browser; None when no one
    else is signed in here (then the caller may set the cookie at once)."""
    current = current_cookie_session(request)
    if current is None or not other_user(current, new):
        return None
    csrf = switch_csrf(request.app[SETTINGS].session_secret, current.token, new.token)
    current_name, new_name = escape(await who(request, current)), escape(await who(request, new))
    hint = (f'<input type="hidden" name="login_hint" value="{escape(login_hint)}">' if login_hint else "")
    body = (f'<h1>Switch user?</h1><div class="card"><p id="switch-question">You are signed in as '
            f'<strong>{current_name}</strong>; this link is for <strong>{new_name}</strong>. Switch?</p>'
            '<p>Switch only if you are that person. Until you do, nothing changes for either of you.</p>'
            '<div class="actions"><form method="post" action="/settings/email/switch">'
            f'<input type="hidden" name="session" value="{escape(new.token)}">'
            f'<input type="hidden" name="csrf" value="{csrf}"><input type="hidden" name="then" value="{escape(then)}">'
            f'{hint}<button id="switch">Switch to {new_name}</button></form>'
            f'<a class="button secondary" id="stay" href="/settings/email">Stay signed in as {current_name}</a>'
            '</div></div>')
    return html_response(page_html("Switch user?", body))


# --- pages: chrome and security headers ------------------------------------------------------------

PAGE_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;background:#f4f5f7;color:#1f2933;margin:0}
header{background:#fff;border-bottom:1px solid #e4e7eb;padding:14px 32px;font-weight:600}
main{max-width:720px;margin:32px auto;padding:0 16px}
h1{font-size:22px;margin:0 0 4px}.sub{color:#616e7c;margin:0 0 24px}
.card{background:#fff;border:1px solid #e4e7eb;border-radius:8px;padding:24px}
.row{display:flex;justify-content:space-between;padding:10px 0;border-bottom:1px solid #f0f2f5}
.row:last-of-type{border-bottom:0}.label{color:#616e7c}
.badge{display:inline-block;padding:3px 10px;border-radius:12px;font-size:13px;font-weight:600}
.ok{background:#e3f9e5;color:#1f7a2e}.warn{background:#fff3c4;color:#8d5b00}.neutral{background:#e4e7eb;color:#3e4c59}
.reason{margin:16px 0;padding:12px 14px;border-left:4px solid #f0b429;background:#fffbea}
.notice{margin:0 0 16px;padding:10px 14px;background:#e6f6ff;border-radius:6px}
.notice.alert{background:#fde8e8;border-left:4px solid #b3261e}
.whoami{color:#3e4c59;margin:0 0 16px}
.actions{margin-top:20px;display:flex;gap:12px}
button,.button{font:inherit;padding:9px 18px;border-radius:6px;border:1px solid #0b69a3;background:#0b69a3;
color:#fff;text-decoration:none;cursor:pointer}.secondary{background:#fff;color:#b3261e;border-color:#b3261e}
h2{font-size:17px;margin:0 0 8px}.card+.card{margin-top:20px}.hint{color:#52606d;font-size:14px}
label{display:block;margin:10px 0 4px;font-weight:600}
input[type=date],input[type=text],textarea,select{font:inherit;padding:7px 9px;border:1px solid #7b8794;
border-radius:6px;max-width:100%;box-sizing:border-box}textarea{width:100%;min-height:110px}
.fields{display:flex;flex-wrap:wrap;gap:12px}.plain{background:#fff;color:#0b69a3}
progress{width:100%;height:18px}.answer{margin:14px 0;padding:12px 14px;border-left:4px solid #0b69a3;
background:#f0f7fc}.todo{font-weight:600}.copyable{width:100%}
.counts{display:flex;flex-wrap:wrap;gap:10px;margin:0 0 16px}
.count{background:#fff;border:1px solid #e4e7eb;border-radius:8px;padding:8px 12px;color:#1f2933;text-decoration:none}
table{border-collapse:collapse;width:100%;font-size:14px}th,td{text-align:left;padding:8px 6px;
border-bottom:1px solid #e4e7eb;vertical-align:top}.scroll{overflow-x:auto}ul.recent{padding-left:18px}
a{color:#0b69a3}:focus-visible{outline:3px solid #f0b429;outline-offset:2px}
@media (max-width:480px){header{padding:12px 16px}.card{padding:16px}.row{flex-direction:column;gap:2px}
.actions{flex-wrap:wrap}}
"""
_STYLE_HASH = base64.b64encode(hashlib.sha256(PAGE_CSS.encode()).digest()).decode()


def page_html(title: str, body: str) -> str:
    """A whole page around an already-escaped body (services/subscriber/templates/base.html)."""
    from services.subscriber.templating import render_page  # the templates import PAGE_CSS from here

    return render_page("base.html", title=title, body=body)


def html_response(html: str, *, status: int = 200) -> web.Response:
    return web.Response(text=html, status=status, content_type="text/html")


def page_csp(login_url: str) -> str:
    """Nothing but the page's own stylesheet and its own script file (no inline script); the script reads
    progress from mailsync only; forms post to mailsync, whose Connect answer redirects to the identity
    platform (browsers check form-action on that redirect too); never framed."""
    login = URL(login_url)
    login_origin = f" {login.origin()}" if login.is_absolute() else ""
    return (f"default-src 'none'; style-src 'sha256-{_STYLE_HASH}'; script-src 'self'; connect-src 'self'; "
            f"form-action 'self'{login_origin}; frame-ancestors 'none'; base-uri 'none'")


async def security_headers(request: web.Request, response: web.StreamResponse) -> None:
    """on_response_prepare: every response of the subscriber, HTML or not, errors included."""
    headers = response.headers
    headers.setdefault("X-Frame-Options", "DENY")
    headers.setdefault("Referrer-Policy", "no-referrer")  # a `?session=` URL must not travel as Referer
    headers.setdefault("X-Content-Type-Options", "nosniff")
    if response.content_type == "text/html":
        headers.setdefault("Content-Security-Policy", page_csp(request.app[SETTINGS].login_url))
        headers.setdefault("Cache-Control", "no-store")
    else:
        headers.setdefault("Content-Security-Policy", "default-src 'none'; frame-ancestors 'none'")

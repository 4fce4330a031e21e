"""The Email Authentication page: status in plain words, what to do, and the buttons. No JavaScript."""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from datetime import UTC, datetime
from html import escape
from typing import Any

from aiohttp import web

from services.subscriber import oauth
from services.subscriber.api import connection_view, disconnect_connection
from services.subscriber.keys import POOL, SETTINGS
from services.subscriber.oauth import redirect
from services.subscriber.sessions import (
    Session,
    confirm_switch,
    csrf_ok,
    csrf_token,
    current_cookie_session,
    decode_session,
    html_response,
    page_html,
    remember,
    security_headers,
    session_from,
    switch_csrf,
    who,
)

_STATUS_WORDS = {
    "never_connected": ("Not connected", "Connect your Microsoft 365 mailbox so emails with your clients "
                        "appear on their timelines.", "neutral"),
    "connected": ("Connected", "Emails with your clients' contacts appear on their timelines within seconds.",
                  "ok"),
    "reconnect_required": ("Reconnect required", "mailsync can no longer read your mailbox. Reconnect to "
                           "resume; mail from the gap is imported when you do.", "warn"),
    "consent_required": ("Administrator approval required", "Ask a Microsoft 365 administrator of your "
                         "organisation to approve mailsync, then reconnect.", "warn"),
    "disconnected": ("Disconnected", "mailsync does not read your mailbox. Connect again at any time.",
                     "neutral"),
}
_NOTICES = {
    "connected": "Your mailbox is connected.",
    "disconnected": "Your mailbox was disconnected and mailsync's access to it removed.",
    "refused": "Microsoft 365 did not grant access. See the reason below.",
    "failed": "Connecting did not complete. Please try again in a minute.",
    "cancelled": "You cancelled at Microsoft 365; nothing changed.",
    "not_in_directory": "mailsync cannot connect a mailbox to this user yet: the user has no email address in "
                        "your organisation's directory to check the mailbox against. Nothing was changed. Ask "
                        "an administrator to add your address to the directory, then connect again.",
}
_ALERTS = frozenset({"mailbox_mismatch", "not_in_directory"})


def csrf_for(request: web.Request, token: str) -> str:
    return csrf_token(request.app[SETTINGS].session_secret, token)


def when(iso: str | None, now: datetime | None = None) -> str:
    """'26 Nov 2026, 21:12 UTC (3 minutes ago)' from an ISO timestamp."""
    if not iso:
        return "Not yet"
    at = datetime.fromisoformat(iso).astimezone(UTC)
    seconds = int(((now or datetime.now(UTC)) - at).total_seconds())
    if seconds < 60:
        ago = "just now"
    elif seconds < 3600:
        ago = f"{seconds // 60} minute{'s' if seconds >= 120 else ''} ago"
    elif seconds < 86400:
        ago = f"{seconds // 3600} hour{'s' if seconds >= 7200 else ''} ago"
    else:
        ago = f"{seconds // 86400} day{'s' if seconds >= 172800 else ''} ago"
    return f"{at.strftime('%-d %b %Y, %H:%M')} UTC ({ago})"


def notice_text(notice: str | None, *, owner: str = "", signed_in_as: str | None = None) -> str | None:
    if notice == "mailbox_mismatch":
        who_signed_in = signed_in_as or "another Microsoft 365 account"
        return (f"You signed in as {who_signed_in}; this account is {owner or 'another person'}'s. mailsync "
                "connected nothing and changed nothing. Sign in with this account's own mailbox, or open the "
                "settings from your own account.")
    return _NOTICES.get(notice or "")


def render(view: dict[str, Any], *, csrf: str, notice: str | None, owner: str = "",
           signed_in_as: str | None = None) -> str:
    status = view["status"]
    title, explanation, tone = _STATUS_WORDS.get(status, (status, "", "neutral"))
    rows = [("Status", f'<span class="badge {tone}" id="status">{escape(title)}</span>')]
    rows.append(("Mailbox", f'<span id="mailbox">{escape(view.get("mailbox_address") or "—")}</span>'))
    rows.append(("Last successful sync", escape(when(view.get("last_synced_at")))))
    if view.get("connected_at"):
        rows.append(("Connected since", escape(when(view["connected_at"]))))
    body_rows = "".join(f'<div class="row"><span class="label">{k}</span><span>{v}</span></div>' for k, v in rows)
    reason = ""
    if status in ("reconnect_required", "consent_required") and view.get("reason"):
        code = f" (code {escape(view['error_code'])})" if view.get("error_code") else ""
        reason = f'<div class="reason" id="reason"><strong>Why:</strong> {escape(view["reason"])}{code}</div>'
    actions = []
    if status == "connected":
        actions.append(f'<form method="post" action="/settings/email/disconnect"><input type="hidden" '
                       f'name="csrf" value="{csrf}"><input type="hidden" name="connection_id" '
                       f'value="{escape(str(view.get("connection_id") or ""))}">'
                       '<button class="secondary" id="disconnect">Disconnect</button></form>')
    else:
        label = "Reconnect" if status in ("reconnect_required", "consent_required") else "Connect"
        actions.append(f'<form method="post" action="/settings/email/connect"><input type="hidden" name="csrf" '
                       f'value="{csrf}"><button id="connect">{label} Microsoft 365</button></form>')
    text = notice_text(notice, owner=owner, signed_in_as=signed_in_as)
    alert = " alert" if notice in _ALERTS else ""
    notice_html = f'<p class="notice{alert}" id="notice">{escape(text)}</p>' if text else ""
    whoami = (f'<p class="whoami" id="whoami">Settings of <strong>{escape(owner)}</strong></p>' if owner else "")
    return page_html("Email Authentication", f"""<h1>Email Authentication</h1>
<p class="sub">Your Microsoft 365 mailbox and your clients' engagement timelines.</p>{whoami}{notice_html}
<div class="card"><p>{escape(explanation)}</p>{body_rows}{reason}<div class="actions">{"".join(actions)}</div></div>""")


async def page(request: web.Request) -> web.Response:
    session, from_query = session_from(request)
    if from_query:
        confirmation = await confirm_switch(request, session, then="page")
        if confirmation is not None:  # another user is signed in here: ask, change nothing yet
            return confirmation
        response = redirect("/settings/email")  # move the token out of the URL into the cookie
        remember(response, request, session)
        return response
    view = await connection_view(request.app[POOL], session.user_id)
    if view is None or view["account_id"] != session.account_id:
        view = {"status": "never_connected", "account_id": session.account_id}
    notice = request.query.get("notice")
    signed_in_as = None
    if notice == "mailbox_mismatch" and request.query.get("attempt"):
        signed_in_as = await request.app[POOL].fetchval(
            "SELECT signed_in_as FROM oauth_states WHERE state_id = $1 AND user_id = $2 AND account_id = $3",
            request.query["attempt"], session.user_id, session.account_id)
    html = render(view, csrf=csrf_for(request, session.token), notice=notice, owner=await who(request, session),
                  signed_in_as=signed_in_as)
    return html_response(html)


async def _checked_form(request: web.Request) -> tuple[Session, Mapping[str, Any]]:
    session, _ = session_from(request)
    form = await request.post()
    if not csrf_ok(request, session, str(form.get("csrf", ""))):
        raise web.HTTPForbidden(text="This form has expired. Reload the page and try again.")
    return session, form


async def connect(request: web.Request) -> web.Response:
    session, _ = await _checked_form(request)
    return await oauth.begin(request, session)


async def disconnect(request: web.Request) -> web.Response:
    session, form = await _checked_form(request)
    own = await request.app[POOL].fetchval(
        "SELECT connection_id FROM mailbox_connections WHERE user_id = $1 AND account_id = $2",
        session.user_id, session.account_id)
    named = str(form.get("connection_id") or own or "")
    if own is None or named != str(own):
        # Only the mailbox's own user may disconnect it from this page.
        raise web.HTTPForbidden(text="You can only disconnect your own mailbox.")
    await disconnect_connection(request.app, named)
    return redirect("/settings/email?notice=disconnected")


async def switch(request: web.Request) -> web.Response:
    """The confirmation's form: replaces the session of this browser (its cookie) with the link's."""
    secret = request.app[SETTINGS].session_secret
    current = current_cookie_session(request)
    form = await request.post()
    new = decode_session(str(form.get("session", "")), secret)
    given = str(form.get("csrf", "")).encode()
    if current is None or not hmac.compare_digest(given, switch_csrf(secret, current.token, new.token).encode()):
        raise web.HTTPForbidden(text="This form has expired. Open the link again.")
    if form.get("then") == "connect":
        response = await oauth.begin(request, new, login_hint=str(form.get("login_hint") or "") or None)
    else:
        response = redirect("/settings/email")
    remember(response, request, new)
    return response


def add_settings_routes(app: web.Application) -> None:
    app.router.add_get("/settings/email", page)
    app.router.add_post("/settings/email/connect", connect)
    app.router.add_post("/settings/email/disconnect", disconnect)
    app.router.add_post("/settings/email/switch", switch)
    app.on_response_prepare.append(security_headers)

"""The Email Authentication page: status in plain words, what to do, and the buttons. No JavaScript."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from datetime import UTC, datetime
from html import escape
from typing import Any

from aiohttp import web

from services.subscriber.api import connection_view, disconnect_connection
from services.subscriber.keys import POOL, SETTINGS
from services.subscriber.sessions import Session, remember, session_from

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
}

_CSS = """
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
.actions{margin-top:20px;display:flex;gap:12px}
button,.button{font:inherit;padding:9px 18px;border-radius:6px;border:1px solid #0b69a3;background:#0b69a3;
color:#fff;text-decoration:none;cursor:pointer}.secondary{background:#fff;color:#b3261e;border-color:#b3261e}
"""


def csrf_for(request: web.Request, token: str) -> str:
    secret = request.app[SETTINGS].session_secret
    return hmac.new(secret.encode(), f"csrf:{token}".encode(), hashlib.sha256).hexdigest()


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


def render(view: dict[str, Any], *, csrf: str, notice: str | None) -> str:
    status = view["status"]
    title, explanation, tone = _STATUS_WORDS.get(status, (status, "", "neutral"))
    rows = [("Status", f'<span class="badge {tone}" id="status">{escape(title)}</span>')]
    rows.append(("Mailbox", escape(view.get("mailbox_address") or "—")))
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
    notice_html = f'<p class="notice" id="notice">{escape(_NOTICES[notice])}</p>' if notice in _NOTICES else ""
    return f"""<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Email Authentication</title>
<meta name="viewport" content="width=device-width,initial-scale=1"><style>{_CSS}</style></head>
<body><header>Settings</header><main><h1>Email Authentication</h1>
<p class="sub">Your Microsoft 365 mailbox and your clients' engagement timelines.</p>{notice_html}
<div class="card"><p>{escape(explanation)}</p>{body_rows}{reason}<div class="actions">{"".join(actions)}</div></div>
</main></body></html>"""


async def page(request: web.Request) -> web.Response:
    session, from_query = session_from(request)
    if from_query:  # move the token out of the URL into the cookie
        response = web.HTTPFound("/settings/email")
        remember(response, request, session)
        raise response
    view = await connection_view(request.app[POOL], session.user_id)
    if view is None or view["account_id"] != session.account_id:
        view = {"status": "never_connected", "account_id": session.account_id}
    return web.Response(text=render(view, csrf=csrf_for(request, session.token),
                                    notice=request.query.get("notice")), content_type="text/html")


async def _checked_form(request: web.Request) -> tuple[Session, Mapping[str, Any]]:
    session, _ = session_from(request)
    form = await request.post()
    if not hmac.compare_digest(str(form.get("csrf", "")), csrf_for(request, session.token)):
        raise web.HTTPForbidden(text="This form has expired. Reload the page and try again.")
    return session, form


async def connect(request: web.Request) -> web.Response:
    await _checked_form(request)
    raise web.HTTPFound("/oauth/microsoft365/start")


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
    raise web.HTTPFound("/settings/email?notice=disconnected")


def add_settings_routes(app: web.Application) -> None:
    app.router.add_get("/settings/email", page)
    app.router.add_post("/settings/email/connect", connect)
    app.router.add_post("/settings/email/disconnect", disconnect)

"""The Email Authentication page: status in plain words, what to do, and everything a user used to ask
support for (import older email, sync now, why an email is missing, the administrator's consent link, recent
activity). Every form works without JavaScript; a small script file adds live progress and copy buttons."""

from __future__ import annotations

import hmac
import uuid
from collections.abc import Mapping
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from aiohttp import web

from services.core.adapters.store.directory import Directory
from services.core.adapters.store.engagement.activity import Activity
from services.core.adapters.store.jobs import SyncJobs
from services.core.adapters.store.mailbox.connections import MailboxConnections
from services.core.adapters.store.oauth_states import OAuthStates
from services.core.application.diagnose import DiagnoseError, diagnose, parse_headers
from services.core.application.sync_requests import Refused, queue_backsync, queue_sync
from services.core.domain.notices import what_to_do
from services.subscriber import oauth
from services.subscriber.api import connection_view, disconnect_connection
from services.subscriber.keys import POOL, SETTINGS
from services.subscriber.oauth import redirect
from services.subscriber.page_words import (
    admin_consent_link,
    as_message_id,
    diagnose_answer,
    import_view,
    looks_like_message_id,
    tenant_todo,
    words_to_send,
)
from services.subscriber.sessions import (
    Session,
    confirm_switch,
    csrf_ok,
    csrf_token,
    current_cookie_session,
    decode_session,
    html_response,
    remember,
    security_headers,
    session_from,
    switch_csrf,
    who,
)
from services.subscriber.templating import SCRIPT_PATH, render_page, static_text

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
# A mailbox synced through the organisation's (tenant) connection: no sign-in of the user's own, so no
# Connect, Reconnect or Disconnect; what the status means and who can change it.
_TENANT_WORDS = {
    "connected": ("Connected through your organisation", "Your mailbox is synced through your organisation's "
                  "Microsoft 365 connection, which an administrator approved once for everyone. You never need "
                  "to sign in here, and changing your password does not interrupt it.", "ok"),
    "out_of_scope": ("Outside your organisation's access policy", "Your organisation's Microsoft 365 application "
                     "access policy does not include your mailbox, so mailsync may not read it. Nothing is lost: "
                     "mail from the gap is imported once it is added.", "warn"),
    "consent_required": ("Waiting for your administrator", "Your organisation's administrator withdrew "
                         "mailsync's consent, so mailsync reads no mailbox of the organisation until they consent "
                         "again. Mail from the gap is imported then.", "warn"),
    "disconnected": ("Disconnected", "mailsync does not read your mailbox through your organisation's "
                     "connection any more.", "neutral"),
}
_NOTICES = {
    "connected": "Your mailbox is connected.",
    "disconnected": "Your mailbox was disconnected and mailsync's access to it removed.",
    "refused": "Microsoft 365 did not grant access. See the reason below.",
    "failed": "Connecting did not complete. Please try again in a minute.",
    "cancelled": "You cancelled at Microsoft 365; nothing changed.",
    "sync_queued": "Sync requested: mailsync checks your mailbox within a minute. Reload to see what it found.",
    "import_queued": "Import started. You can leave this page; it carries on and shows its progress here.",
    "estimate_queued": "Counting the emails in that range; the estimate appears here in a moment.",
    "not_connected": "Your mailbox is not connected; connect it first.",
    "bad_range": "Those dates do not make a range mailsync can import (From must be before To, at most 10 years).",
    "tenant_managed": "Your mailbox is synced through your organisation's connection; there is nothing to "
                      "connect here.",
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
           signed_in_as: str | None = None, **sections: Any) -> str:
    """The whole page (services/subscriber/templates/settings.html). `sections`: last_found, import_job,
    consent, answer, diagnose_error, pasted, activity, degraded, since, until — each optional."""
    status = view["status"]
    tenant_mode = view.get("mode") == "tenant"
    title, explanation, tone = _STATUS_WORDS.get(status, (status, "", "neutral"))
    if tenant_mode:
        key = "out_of_scope" if view.get("error_code") == "out_of_scope" else status
        title, explanation, tone = _TENANT_WORDS.get(key, (title, explanation, tone))
    rows: list[tuple[str, str, str]] = [("Status", title, "status"),
                                        ("Mailbox", view.get("mailbox_address") or "—", "mailbox"),
                                        ("Last successful sync", when(view.get("last_synced_at")), "")]
    if tenant_mode:
        rows.append(("Synced through", "Your organisation's Microsoft 365 connection", "mode"))
    if view.get("connected_at"):
        rows.append(("Connected since", when(view["connected_at"]), ""))
    needs = status in ("reconnect_required", "consent_required")
    todo = what_to_do(status, view.get("error_code")) if needs else None
    if tenant_mode:
        todo = tenant_todo(status, view.get("error_code"))
    today = datetime.now(UTC).date()
    context: dict[str, Any] = {
        "last_found": None, "import_job": None, "consent": None, "answer": None, "diagnose_error": None,
        "pasted": "", "activity": None, "degraded": None, "admins": [],
        "since": (today - timedelta(days=14)).isoformat(), "until": today.isoformat(), **sections}
    return render_page(
        "settings.html", title="Email Authentication", script=True, status=status, explanation=explanation,
        tone=tone, rows=rows, reason=view.get("reason") if needs else None,
        error_code=view.get("error_code") if needs else None,
        todo=todo, tenant_mode=tenant_mode,
        connection_id=str(view.get("connection_id") or ""), csrf=csrf,
        connect_label="Reconnect" if needs else "Connect",
        notice=notice_text(notice, owner=owner, signed_in_as=signed_in_as), alert=notice in _ALERTS, owner=owner,
        last_sync=when(view.get("last_synced_at")), **context)


async def _sections(request: web.Request, session: Session, view: dict[str, Any]) -> dict[str, Any]:
    """What the page shows beyond the status: the last sync's finds, the latest import, the administrator's
    link, recent activity, push coverage."""
    pool, settings = request.app[POOL], request.app[SETTINGS]
    found: dict[str, Any] = {}
    connection_id = view.get("connection_id")
    if connection_id and view["status"] == "connected":
        found["last_found"] = await last_sync_found(pool, connection_id, view.get("last_synced_at"))
        job = await latest_import(pool, connection_id)
        if job is not None:
            found["import_job"] = _import_context(job)
        found["degraded"] = await coverage_words(pool, connection_id)
    if view.get("mode") == "tenant":
        # Who can change it: the account's administrators in the directory (role admin), a few by name.
        found["admins"] = await Directory(pool).admins(session.account_id, limit=3)
    elif view["status"] == "consent_required":
        tenant = await MailboxConnections(pool).tenant_of(connection_id) if connection_id else None
        link = admin_consent_link(settings.login_url, settings.client_id, settings.app_url, tenant)
        found["consent"] = {"link": link, "words": words_to_send(link, view.get("mailbox_address"))}
    found["activity"] = await recent_activity(pool, session)
    return found


def _import_context(job: Any) -> dict[str, Any]:
    shown = import_view(dict(job))
    return {"job_id": str(job["job_id"]), "phase": shown.phase, "words": shown.words, "value": shown.value,
            "maximum": shown.maximum, "running": shown.running}


async def latest_import(pool: Any, connection_id: str) -> Any:
    """The connection's latest back-sync (estimate or import): the page finds it again after any restart."""
    return await SyncJobs(pool).latest_backsync(connection_id)


async def last_sync_found(pool: Any, connection_id: str, last_synced_at: str | None) -> str | None:
    """What the syncs of the last 24 hours found that notifications had not brought already (the poll
    publishes only those). A day rather than the last poll alone: the next scheduled poll may follow a
    Sync now within minutes and find nothing, which would hide what the one the user asked for found."""
    if not last_synced_at:
        return None
    row = await Activity(pool).poll_finds(connection_id)
    if not row["found"]:
        return "In the last 24 hours syncs found nothing that notifications had not already brought in."
    return (f"In the last 24 hours syncs found {row['found']} email{'s' if row['found'] != 1 else ''} that "
            f"notifications had missed; {row['matched']} added to your clients' timelines.")


async def recent_activity(pool: Any, session: Session) -> dict[str, Any]:
    activity = Activity(pool)
    counts = await activity.counts(session.user_id, session.account_id)
    rows = await activity.recent(session.user_id, session.account_id, limit=5)
    recent = [{"when": f"{r['occurred_at']:%-d %b %H:%M}",
               "direction": "Sent" if r["direction"] == "outbound" else "Received", "subject": r["subject"]}
              for r in rows]
    return {"day": counts["day"], "week": counts["week"], "recent": recent}


async def coverage_words(pool: Any, connection_id: str) -> str | None:
    from services.core.application.coverage import load_coverage

    found = await load_coverage(pool, connection_id)
    return found.words if found.degraded else None


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
        signed_in_as = await OAuthStates(request.app[POOL]).signed_in_as(
            request.query["attempt"], session.user_id, session.account_id)
    html = render(view, csrf=csrf_for(request, session.token), notice=notice, owner=await who(request, session),
                  signed_in_as=signed_in_as, **await _sections(request, session, view))
    return html_response(html)


async def _own_view(request: web.Request, session: Session) -> dict[str, Any]:
    view = await connection_view(request.app[POOL], session.user_id)
    if view is None or view["account_id"] != session.account_id:
        return {"status": "never_connected", "account_id": session.account_id}
    return view


async def sync_now(request: web.Request) -> web.Response:
    session, _ = await _checked_form(request)
    view = await _own_view(request, session)
    try:
        await queue_sync(MailboxConnections(request.app[POOL]), str(view.get("connection_id") or ""),
                         session.account_id, view["status"])
    except Refused:
        return redirect("/settings/email?notice=not_connected")
    return redirect("/settings/email?notice=sync_queued#sync")


def _day(raw: Any) -> date:
    return date.fromisoformat(str(raw or "").strip())


async def start_import(request: web.Request) -> web.Response:
    """First an estimate (a dry-run back-sync of the range), then, confirmed, the import of the same range."""
    session, form = await _checked_form(request)
    view = await _own_view(request, session)
    jobs, connection_id = SyncJobs(request.app[POOL]), str(view.get("connection_id") or "")
    estimate = str(form.get("estimate") or "")
    try:
        if estimate:
            job = await jobs.estimate_range(str(uuid.UUID(estimate)), connection_id or None)
            if job is None:
                return redirect("/settings/email?notice=bad_range#import")
            since, until, dry_run = job["since"], job["until"], False
        else:
            since = datetime.combine(_day(form.get("since")), time(0), UTC)
            # "To" is included: the range ends at the next midnight (never in the future, where nothing is).
            until = min(datetime.combine(_day(form.get("until")) + timedelta(days=1), time(0), UTC),
                        datetime.now(UTC))
            dry_run = True
        await queue_backsync(jobs, connection_id, session.account_id, view["status"], since=since, until=until,
                             dry_run=dry_run)
    except ValueError:
        return redirect("/settings/email?notice=bad_range#import")
    except Refused as exc:
        notice = "not_connected" if exc.code in ("not_connected", "not_found") else "bad_range"
        return redirect(f"/settings/email?notice={notice}#import")
    return redirect(f"/settings/email?notice={'estimate_queued' if dry_run else 'import_queued'}#import")


async def import_progress(request: web.Request) -> web.Response:
    """The page's script polls this for the progress bar (JSON; only the session's own mailbox's jobs)."""
    session, _ = session_from(request)
    try:
        job_id = str(uuid.UUID(request.match_info["job_id"]))
    except ValueError:
        return _json_error(404, "not_found", "no such import")
    job = await SyncJobs(request.app[POOL]).users_backsync(job_id, session.user_id, session.account_id)
    if job is None:
        return _json_error(404, "not_found", "no such import")
    shown = import_view(dict(job))
    return web.json_response({"status": job["status"], "dry_run": job["dry_run"], "phase": shown.phase,
                              "words": shown.words, "value": shown.value, "max": shown.maximum,
                              "running": shown.running, "messages_seen": job["messages_seen"],
                              "engagements_created": job["engagements_created"],
                              "estimated_total": job["estimated_total"]})


def _json_error(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"error": {"code": code, "message": message}}, status=status)


MAX_PASTE = 256 * 1024


async def explain(request: web.Request) -> web.Response:
    """Why is an email missing: the diagnose answer in plain words, on the page itself."""
    session, form = await _checked_form(request)
    pasted = str(form.get("headers") or "")[:MAX_PASTE]
    view = await _own_view(request, session)
    sections = await _sections(request, session, view)
    status = 200
    try:
        if not pasted.strip():
            raise DiagnoseError("paste the email's Internet headers or its Message-ID")
        if looks_like_message_id(pasted):
            facts, imid = None, as_message_id(pasted)
        else:
            facts, imid = parse_headers(pasted), None
        in_account = await Directory(request.app[POOL]).in_account(session.user_id, session.account_id)
        if not in_account:
            raise LookupError(session.user_id)
        result = await diagnose(request.app[POOL], session.user_id, imid, facts)
        connected_at = view.get("connected_at")
        sections["answer"] = diagnose_answer(result, connected_at=datetime.fromisoformat(connected_at)
                                             if connected_at else None, sent_at=facts.sent_at if facts else None)
    except DiagnoseError as exc:
        sections["diagnose_error"], status = f"mailsync could not read that: {exc}.", 400
    except LookupError:
        sections["diagnose_error"] = ("Your user is not in your company's directory in mailsync yet; "
                                      "ask an administrator.")
    html = render(view, csrf=csrf_for(request, session.token), notice=None, owner=await who(request, session),
                  pasted=pasted, **sections)
    return html_response(html, status=status)


async def script(request: web.Request) -> web.Response:
    return web.Response(text=static_text("page.js"), content_type="application/javascript",
                        headers={"Cache-Control": "no-cache"})


async def _checked_form(request: web.Request) -> tuple[Session, Mapping[str, Any]]:
    session, _ = session_from(request)
    form = await request.post()
    if not csrf_ok(request, session, str(form.get("csrf", ""))):
        raise web.HTTPForbidden(text="This form has expired. Reload the page and try again.")
    return session, form


async def connect(request: web.Request) -> web.Response:
    session, _ = await _checked_form(request)
    mode = await MailboxConnections(request.app[POOL]).active_mode(session.user_id, session.account_id)
    if mode == "tenant":  # the organisation's connection syncs it: a sign-in of the user's own changes nothing
        return redirect("/settings/email?notice=tenant_managed")
    return await oauth.begin(request, session)


async def disconnect(request: web.Request) -> web.Response:
    session, form = await _checked_form(request)
    own = await MailboxConnections(request.app[POOL]).id_of_user(session.user_id, session.account_id)
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
    app.router.add_post("/settings/email/sync", sync_now)
    app.router.add_post("/settings/email/import", start_import)
    app.router.add_get("/settings/email/import/{job_id}", import_progress)
    app.router.add_post("/settings/email/diagnose", explain)
    app.router.add_get(SCRIPT_PATH, script)
    app.on_response_prepare.append(security_headers)

"""Connect a mailbox: authorization code + PKCE, a signed single-use expiring `state`, bound to the browser
that started the flow (a nonce in an HttpOnly cookie, its hash stored with the state) and to the user
(the signed-in mailbox must be one of the user's directory addresses)."""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
from datetime import UTC, datetime, timedelta
from html import escape
from typing import Any
from urllib.parse import urlencode

from aiohttp import web

from services.core.adapters.graph.errors import GraphError, classify_authorize_error
from services.core.adapters.graph.identity import pkce_pair
from services.core.adapters.store.directory import Directory
from services.core.adapters.store.mailbox.connections import MailboxConnections
from services.core.adapters.store.oauth_states import OAuthStates
from services.core.application.connect import record_grant
from services.core.application.subscriptions import (
    create_mailbox_subscription,
    delete_connection_subscriptions,
    subscribing,
)
from services.core.domain.addresses import normalize_address, parse_proxy_addresses
from services.core.domain.model import ConnectionStatus
from services.subscriber.keys import GRAPH, IDENTITY, POOL, SETTINGS, STATUS, TOKENS
from services.subscriber.sessions import (
    Session,
    confirm_switch,
    csrf_ok,
    directory_address,
    html_response,
    page_html,
    remember,
    session_from,
)

log = logging.getLogger(__name__)
STATE_TTL = timedelta(minutes=10)
PURGE_AFTER = timedelta(hours=1)  # states are kept this long past their expiry (the page may still name them)
PURGE_BATCH = 500  # rows deleted per start at most: the purge never grows with the backlog
NONCE_COOKIE = "mailsync_oauth_"  # + the state id: flows started in two tabs of one browser both complete
NONCE_PATH = "/oauth/microsoft365/callback"


def _sign(secret: str, state_id: str) -> str:
    mac = hmac.new(secret.encode(), f"oauth-state:{state_id}".encode(), hashlib.sha256).hexdigest()[:32]
    return f"{state_id}.{mac}"


def _verify(secret: str, state: str) -> str | None:
    state_id, _, _ = state.partition(".")
    return state_id if state_id and hmac.compare_digest(_sign(secret, state_id), state) else None


def nonce_hash(nonce: str) -> str:
    return hashlib.sha256(nonce.encode()).hexdigest()


def redirect_uri(request: web.Request) -> str:
    return f"{request.app[SETTINGS].app_url}/oauth/microsoft365/callback"


def redirect(location: str) -> web.Response:
    return web.Response(status=302, headers={"Location": location})


def back(notice: str | None = None, **extra: str) -> web.Response:
    query = urlencode({"notice": notice, **extra}) if notice else ""
    return redirect("/settings/email" + (f"?{query}" if query else ""))


def problem_page(status: int, title: str, text: str) -> web.Response:
    body = (f'<h1>{escape(title)}</h1><div class="card"><p class="notice alert" id="problem">{escape(text)}</p>'
            '<p>To connect your own mailbox, open the Email Authentication page from your app and press '
            'Connect there.</p></div>')
    return html_response(page_html(title, body), status=status)


async def purge_states(pool: Any) -> int:
    """Remove states that expired over PURGE_AFTER ago (used or not); bounded per call, and concurrent starts
    skip each other's rows instead of waiting on them."""
    return await OAuthStates(pool).purge(PURGE_AFTER, PURGE_BATCH)


async def start(request: web.Request) -> web.Response:
    """`GET /oauth/microsoft365/start?csrf=` (+ `session=` once, `login_hint=`): starting a flow changes state,
    so it needs the session's CSRF token like every form; a `?session=` for another user than the one signed
    in here asks first."""
    session, from_query = session_from(request)
    if not csrf_ok(request, session, request.query.get("csrf", "")):
        return problem_page(403, "Start from the settings page",
                            "This link cannot start connecting a mailbox by itself (it carries no valid "
                            "form token). Nothing was changed.")
    login_hint = request.query.get("login_hint") or None
    if from_query:
        confirmation = await confirm_switch(request, session, then="connect", login_hint=login_hint)
        if confirmation is not None:
            return confirmation
    response = await begin(request, session, login_hint=login_hint)
    if from_query:
        remember(response, request, session)
    return response


async def begin(request: web.Request, session: Session, *, login_hint: str | None = None) -> web.Response:
    """Store a state (PKCE verifier, hash of this browser's nonce) and send the browser to sign in."""
    settings, pool = request.app[SETTINGS], request.app[POOL]
    await purge_states(pool)
    own_address = await directory_address(request, session)
    if own_address is None:
        return back("not_in_directory")
    verifier, challenge = pkce_pair()
    state_id, nonce = secrets.token_urlsafe(24), secrets.token_urlsafe(32)
    login_hint = login_hint or own_address
    await OAuthStates(pool).add(state_id=state_id, user_id=session.user_id, account_id=session.account_id,
                                code_verifier=verifier, login_hint=login_hint,
                                expires_at=datetime.now(UTC) + STATE_TTL, nonce_hash=nonce_hash(nonce))
    url = request.app[IDENTITY].authorize_url(
        state=_sign(settings.session_secret, state_id), challenge=challenge,
        redirect_uri=redirect_uri(request), login_hint=login_hint)
    response = redirect(url)
    response.set_cookie(NONCE_COOKIE + state_id, nonce, httponly=True, samesite="Lax", path=NONCE_PATH,
                        max_age=int(STATE_TTL.total_seconds()), secure=settings.app_url.startswith("https://"))
    return response


def _finished(response: web.Response, state_id: str) -> web.Response:
    response.del_cookie(NONCE_COOKIE + state_id, path=NONCE_PATH)
    return response


def user_cancelled(error: str, description: str, subcode: str) -> bool:
    """Cancel on Microsoft's pages: `access_denied` with `error_subcode=cancel` or AADSTS65004 (declined)."""
    if subcode.lower() == "cancel":
        return True
    code = classify_authorize_error(error, description).error_code
    return error == "access_denied" and code in ("AADSTS65004", "access_denied")


async def callback(request: web.Request) -> web.Response:
    settings, pool = request.app[SETTINGS], request.app[POOL]
    state_id = _verify(settings.session_secret, request.query.get("state", ""))
    if state_id is None:
        return problem_page(400, "Invalid sign-in link", "The sign-in link is invalid. Nothing was connected.")
    # Consumed whatever happens next: a state answers one callback only.
    state = await OAuthStates(pool).consume(state_id)
    if state is None:
        return problem_page(400, "Sign-in link used or expired",
                            "This sign-in link was already used or has expired. Nothing was connected.")
    nonce = request.cookies.get(NONCE_COOKIE + state_id, "")
    if not nonce or not state["nonce_hash"] or not hmac.compare_digest(nonce_hash(nonce), state["nonce_hash"]):
        log.warning("oauth callback refused: not the browser that started it", extra={"user_id": state["user_id"]})
        return problem_page(403, "Not connected: this sign-in was started elsewhere",
                            "This sign-in was started in another browser, by another person or another "
                            "session, so mailsync did not connect the mailbox you signed in with to anyone. "
                            "Nothing was changed.")
    user_id, account_id = state["user_id"], state["account_id"]
    if "error" in request.query:
        error, description = request.query["error"], request.query.get("error_description", "")
        if user_cancelled(error, description, request.query.get("error_subcode", "")):
            return _finished(back("cancelled"), state_id)
        classified = classify_authorize_error(error, description)
        await _record_refusal(request, user_id, account_id, classified.severity.value, classified.reason,
                              classified.error_code)
        return _finished(back("refused"), state_id)
    code = request.query.get("code")
    if not code:
        return problem_page(400, "Sign-in incomplete", "The sign-in answer carried no code. Nothing was connected.")
    try:
        connection_id = await connect_mailbox(request, user_id, account_id, code, state["code_verifier"])
    except MailboxMismatch as exc:
        await OAuthStates(pool).record_signed_in_as(state_id, exc.signed_in_as)
        log.warning("oauth callback refused: mailbox_mismatch", extra={"user_id": user_id})
        return _finished(back("mailbox_mismatch", attempt=state_id), state_id)
    except NotInDirectory:
        return _finished(back("not_in_directory"), state_id)
    except MissingScopes as exc:
        await _record_refusal(request, user_id, account_id, ConnectionStatus.CONSENT_REQUIRED.value,
                              f"Microsoft 365 did not grant {', '.join(exc.missing)}; mailsync needs it to read "
                              "mail. Reconnect and accept every permission, or ask an administrator to approve "
                              "mailsync.", "missing_scopes")
        return _finished(back("refused"), state_id)
    except GraphError as exc:
        log.warning("connect failed", extra={"error_code": exc.classified.error_code})
        return _finished(back("failed"), state_id)
    log.info("mailbox connected", extra={"connection_id": connection_id})
    return _finished(back("connected"), state_id)


async def _record_refusal(request: web.Request, user_id: str, account_id: str, severity: str,
                          reason: str, error_code: str) -> None:
    status = (ConnectionStatus.CONSENT_REQUIRED if severity == ConnectionStatus.CONSENT_REQUIRED
              else ConnectionStatus.RECONNECT_REQUIRED)
    connection_id = await MailboxConnections(request.app[POOL]).ensure(account_id, user_id)
    await request.app[STATUS].set_status(connection_id, status, reason, error_code)


REQUIRED_SCOPES = ("User.Read", "Mail.Read")


class MissingScopes(Exception):
    def __init__(self, missing: list[str]) -> None:
        super().__init__(f"missing scopes: {', '.join(missing)}")
        self.missing = missing


class NotInDirectory(Exception):
    """The user has no directory address: nothing to check a mailbox against, so nothing is connected."""


class MailboxMismatch(Exception):
    def __init__(self, signed_in_as: str, expected: str) -> None:
        super().__init__("the signed-in mailbox is not one of the user's addresses")
        self.signed_in_as = signed_in_as
        self.expected = expected


def missing_scopes(granted: tuple[str, ...]) -> list[str]:
    """Graph returns scopes with or without the resource prefix, in any case."""
    have = {s.rsplit("/", 1)[-1].lower() for s in granted}
    return [s for s in REQUIRED_SCOPES if s.lower() not in have]


def mailbox_addresses(me: dict[str, Any]) -> tuple[str, frozenset[str]]:
    """(primary, every SMTP address) of a `/me` answer: mail, userPrincipalName, proxyAddresses, normalised."""
    primary = normalize_address(str(me.get("mail") or me.get("userPrincipalName") or "")) or ""
    found = {a for a in (normalize_address(str(me.get(k) or "")) for k in ("mail", "userPrincipalName")) if a}
    proxies = me.get("proxyAddresses") or []
    found |= parse_proxy_addresses([str(p) for p in proxies] if isinstance(proxies, list) else [])
    return primary, frozenset(found)


async def user_addresses(pool: Any, user_id: str, account_id: str) -> tuple[str | None, frozenset[str]]:
    """(directory address, every address the directory gives the user): `users.email` and the aliases of
    `user.upserted`. Addresses learnt from Graph (`source = 'graph'`) do not count: a mailbox must not
    vouch for itself."""
    rows = await Directory(pool).addresses(user_id, account_id)
    primary = next((str(r["address"]) for r in rows if r["is_primary"]), None)
    if primary is None:
        return None, frozenset()
    normalised = {normalize_address(str(r["address"])) for r in rows}
    return primary, frozenset(a for a in normalised if a)


async def connect_mailbox(request: web.Request, user_id: str, account_id: str, code: str, verifier: str) -> str:
    """Exchange the code, check the mailbox is the user's, store the grant in one short transaction, then
    (no transaction open) publish the status and replace the Graph subscriptions."""
    app = request.app
    pool = app[POOL]
    tokens = await app[IDENTITY].exchange_code(code, verifier, redirect_uri(request))
    missing = missing_scopes(tokens.scopes)
    if "User.Read" in missing:  # without /me nothing can be checked
        raise MissingScopes(missing)
    me = await app[GRAPH].get_me(tokens.access_token)
    address, signed_in = mailbox_addresses(me)
    expected, allowed = await user_addresses(pool, user_id, account_id)
    if expected is None:
        raise NotInDirectory(user_id)
    if not signed_in & allowed:
        # The tokens of this exchange are dropped here: never stored, never used again.
        raise MailboxMismatch(address or str(me.get("userPrincipalName") or "an unknown account"), expected)
    if missing:
        raise MissingScopes(missing)
    graph_user_id = str(me["id"])
    aliases = sorted(parse_proxy_addresses(list(me.get("proxyAddresses") or [])) | ({address} if address else set()))
    tenant_id = tokens.tenant_id
    connection_id = await record_grant(pool, app[TOKENS], app[SETTINGS], account_id=account_id, user_id=user_id,
                                       tenant_id=tenant_id, graph_user_id=graph_user_id, address=address,
                                       aliases=aliases, tokens=tokens)
    # Committed: from here on, network calls (Kafka, Graph) with no transaction open. The mailbox's subscribe
    # lock is taken before it shows as connected, so the renewer's "missing subscription" pass waits its turn.
    async with subscribing(pool, connection_id, wait=True):
        await app[STATUS].set_status(connection_id, ConnectionStatus.CONNECTED, None, None, signed_in=True)
        # Reconnect replaces subscriptions instead of orphaning them.
        await delete_connection_subscriptions(pool, app[GRAPH], token=tokens.access_token,
                                              connection_id=connection_id, graph_user_id=graph_user_id)
        await create_mailbox_subscription(pool, app[GRAPH], app[SETTINGS], token=tokens.access_token,
                                          connection_id=connection_id, account_id=account_id,
                                          tenant_id=tenant_id, graph_user_id=graph_user_id,
                                          token_expires_at=tokens.expires_at)  # first reminder: no catch-up
    return connection_id

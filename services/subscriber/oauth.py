"""Connect a mailbox: authorization code + PKCE, a signed single-use expiring `state`."""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp import web

from services.core.addresses import normalize_address, parse_proxy_addresses
from services.core.config import Settings
from services.core.domain import ConnectionStatus
from services.core.graph.errors import GraphError, classify_authorize_error
from services.core.graph.identity import pkce_pair
from services.core.subscriptions import create_mailbox_subscription, delete_connection_subscriptions
from services.subscriber.keys import GRAPH, IDENTITY, POOL, SETTINGS, STATUS, TOKENS
from services.subscriber.sessions import remember, session_from

log = logging.getLogger(__name__)
STATE_TTL = timedelta(minutes=10)


def _sign(secret: str, state_id: str) -> str:
    mac = hmac.new(secret.encode(), f"oauth-state:{state_id}".encode(), hashlib.sha256).hexdigest()[:32]
    return f"{state_id}.{mac}"


def _verify(secret: str, state: str) -> str | None:
    state_id, _, _ = state.partition(".")
    return state_id if state_id and hmac.compare_digest(_sign(secret, state_id), state) else None


def redirect_uri(request: web.Request) -> str:
    return f"{request.app[SETTINGS].public_url}/oauth/microsoft365/callback"


async def start(request: web.Request) -> web.Response:
    session, from_query = session_from(request)
    settings, pool = request.app[SETTINGS], request.app[POOL]
    verifier, challenge = pkce_pair()
    state_id = secrets.token_urlsafe(24)
    login_hint = request.query.get("login_hint") or await pool.fetchval(
        "SELECT email FROM users WHERE user_id = $1 AND account_id = $2", session.user_id, session.account_id)
    await pool.execute(
        "INSERT INTO oauth_states (state_id, user_id, account_id, code_verifier, login_hint, expires_at)"
        " VALUES ($1, $2, $3, $4, $5, $6)",
        state_id, session.user_id, session.account_id, verifier, login_hint, datetime.now(UTC) + STATE_TTL)
    url = request.app[IDENTITY].authorize_url(
        state=_sign(settings.session_secret, state_id), challenge=challenge,
        redirect_uri=redirect_uri(request), login_hint=login_hint)
    response = web.HTTPFound(url)
    if from_query:
        remember(response, request, session)
    return response


def _back(message: str | None = None) -> web.HTTPFound:
    return web.HTTPFound("/settings/email" + (f"?notice={message}" if message else ""))


async def callback(request: web.Request) -> web.Response:
    settings, pool = request.app[SETTINGS], request.app[POOL]
    state_id = _verify(settings.session_secret, request.query.get("state", ""))
    if state_id is None:
        raise web.HTTPBadRequest(text="The sign-in link is invalid. Start again from the settings page.")
    state = await pool.fetchrow(
        "UPDATE oauth_states SET used_at = now() WHERE state_id = $1 AND used_at IS NULL AND expires_at > now()"
        " RETURNING user_id, account_id, code_verifier", state_id)
    if state is None:
        raise web.HTTPBadRequest(text="This sign-in link was already used or has expired. Start again.")
    if "error" in request.query:
        classified = classify_authorize_error(request.query["error"], request.query.get("error_description", ""))
        await _record_refusal(request, state["user_id"], state["account_id"], classified.severity.value,
                              classified.reason, classified.error_code)
        return _back("refused")
    code = request.query.get("code")
    if not code:
        raise web.HTTPBadRequest(text="The sign-in answer carried no code.")
    try:
        connection_id = await connect_mailbox(request, state["user_id"], state["account_id"], code,
                                              state["code_verifier"])
    except MissingScopes as exc:
        await _record_refusal(request, state["user_id"], state["account_id"], ConnectionStatus.CONSENT_REQUIRED.value,
                              f"Microsoft 365 did not grant {', '.join(exc.missing)}; mailsync needs it to read "
                              "mail. Reconnect and accept every permission, or ask an administrator to approve "
                              "mailsync.", "missing_scopes")
        return _back("refused")
    except GraphError as exc:
        log.warning("connect failed", extra={"error_code": exc.classified.error_code})
        return _back("failed")
    log.info("mailbox connected", extra={"connection_id": connection_id})
    return _back("connected")


async def _record_refusal(request: web.Request, user_id: str, account_id: str, severity: str,
                          reason: str, error_code: str) -> None:
    status = (ConnectionStatus.CONSENT_REQUIRED if severity == ConnectionStatus.CONSENT_REQUIRED
              else ConnectionStatus.RECONNECT_REQUIRED)
    connection_id = await request.app[POOL].fetchval(
        "INSERT INTO mailbox_connections (account_id, user_id) VALUES ($1, $2)"
        " ON CONFLICT (user_id) DO UPDATE SET updated_at = now() RETURNING connection_id", account_id, user_id)
    await request.app[STATUS].set_status(str(connection_id), status, reason, error_code)


async def queue_backfill(conn: Any, settings: Settings, connection_id: str, last_synced_at: datetime | None) -> None:
    """A first connection imports the last day; a reconnect imports the whole gap (up to a cap)."""
    now = datetime.now(UTC)
    since = last_synced_at if last_synced_at else now - timedelta(hours=settings.backfill_first_h)
    since = max(since, now - timedelta(days=settings.backfill_cap_days))
    if since < now:
        await conn.execute("INSERT INTO sync_jobs (connection_id, kind, since, until)"
                           " VALUES ($1::uuid, 'backfill', $2, $3)", connection_id, since, now)


REQUIRED_SCOPES = ("User.Read", "Mail.Read")


class MissingScopes(Exception):
    def __init__(self, missing: list[str]) -> None:
        super().__init__(f"missing scopes: {', '.join(missing)}")
        self.missing = missing


def missing_scopes(granted: tuple[str, ...]) -> list[str]:
    """Graph returns scopes with or without the resource prefix, in any case."""
    have = {s.rsplit("/", 1)[-1].lower() for s in granted}
    return [s for s in REQUIRED_SCOPES if s.lower() not in have]


async def connect_mailbox(request: web.Request, user_id: str, account_id: str, code: str, verifier: str) -> str:
    app = request.app
    tokens = await app[IDENTITY].exchange_code(code, verifier, redirect_uri(request))
    missing = missing_scopes(tokens.scopes)
    if missing:
        raise MissingScopes(missing)
    me = await app[GRAPH].get_me(tokens.access_token)
    graph_user_id = str(me["id"])
    address = normalize_address(str(me.get("mail") or me.get("userPrincipalName") or ""))
    aliases = sorted(parse_proxy_addresses(list(me.get("proxyAddresses") or [])) | ({address} if address else set()))
    tenant_id = tokens.tenant_id
    pool = app[POOL]
    async with pool.acquire() as conn:
        async with conn.transaction():
            await conn.execute("INSERT INTO accounts (account_id) VALUES ($1) ON CONFLICT DO NOTHING", account_id)
            previous = await conn.fetchrow(
                "SELECT last_synced_at FROM mailbox_connections WHERE user_id = $1", user_id)
            connection_id = str(await conn.fetchval(
                """INSERT INTO mailbox_connections (account_id, user_id, tenant_id, graph_user_id, mailbox_address,
                                                    mailbox_addresses, connected_at)
                   VALUES ($1, $2, $3, $4, $5, $6, now())
                   ON CONFLICT (user_id) DO UPDATE SET tenant_id = $3, graph_user_id = $4, mailbox_address = $5,
                          mailbox_addresses = $6, connected_at = now(), updated_at = now()
                   RETURNING connection_id""",
                account_id, user_id, tenant_id, graph_user_id, address, aliases))
            await app[TOKENS].store(conn, connection_id, tokens)
            await queue_backfill(conn, app[SETTINGS], connection_id,
                                 previous["last_synced_at"] if previous else None)
        await app[STATUS].set_status(connection_id, ConnectionStatus.CONNECTED, None, None)
        # Reconnect replaces subscriptions instead of orphaning them.
        await delete_connection_subscriptions(conn, app[GRAPH], token=tokens.access_token,
                                              connection_id=connection_id, graph_user_id=graph_user_id)
        await create_mailbox_subscription(conn, app[GRAPH], app[SETTINGS], token=tokens.access_token,
                                          connection_id=connection_id, account_id=account_id,
                                          tenant_id=tenant_id, graph_user_id=graph_user_id)
    return connection_id

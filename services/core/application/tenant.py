"""The tenant-wide connection: consent states, the verified-domain check, enrolment of the account's
mailboxes, consent revocation, disconnect. Every Graph or identity call happens with no transaction open:
read in one short transaction (or none), call, then record the outcome in another.

A tenant-mode mailbox is a `mailbox_connections` row with mode = 'tenant' whose tokens come from the app
credential (TokenService asks AppCredentials), so the matcher's fetch and the renewer's subscribe, renew
and poll treat it like any other connected mailbox.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import logging
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote, urlencode

import asyncpg

from services.core.adapters.app_credential import AppCredentials
from services.core.adapters.config import Settings
from services.core.adapters.graph.client import GraphClient
from services.core.adapters.graph.errors import Classified, GraphError, NotFound, Severity
from services.core.adapters.kafka import Publisher
from services.core.adapters.store.directory import Directory
from services.core.adapters.store.jobs import SyncJobs
from services.core.adapters.store.mailbox.connections import MailboxConnections
from services.core.adapters.store.mailbox.tenant_mode import TenantModeConnections
from services.core.adapters.store.tenants import (
    AccountUsers,
    SharedMailboxes,
    TenantConnections,
    TenantConsentStates,
    TenantMailboxes,
)
from services.core.adapters.tenant_graph import verified_domains
from services.core.adapters.tenant_rules import check_domains, mail_domain
from services.core.application import outbox, tenant_status
from services.core.application.backfill import queue_backfill
from services.core.application.connections import StatusReporter, TokenService
from services.core.application.subscriptions import delete_pending, mark_for_deletion
from services.core.domain.addresses import normalize_address, parse_proxy_addresses
from services.core.domain.model import ConnectionStatus

log = logging.getLogger(__name__)

STATE_TTL = timedelta(hours=24)  # the link travels to an administrator, who may open it the next day
RECHECK_OUT_OF_SCOPE = timedelta(hours=1)  # an access-policy change propagates slowly; never a tight loop
SYNC_LEASE = timedelta(minutes=2)
SHARED_PREFIX = "shared:"
ADMIN_CONSENT_SCOPE = "https://graph.microsoft.com/.default"

REASON_PENDING = "Waiting for an administrator of the organisation to open the consent link."
REASON_DISCONNECTED = "The organisation-wide connection was removed; mailsync no longer reads these mailboxes."
REASON_MAILBOX_GONE = "This mailbox is no longer synced through the organisation-wide connection."
REASON_MAILBOX_CONSENT = ("Your organisation's administrator withdrew mailsync's consent; an administrator must "
                          "consent again. Mail is imported once they do.")
REASON_OUT_OF_SCOPE = ("This mailbox is outside the organisation's application access policy, so mailsync may "
                       "not read it; an administrator must add it to the policy. Mail is imported once they do.")
OUT_OF_SCOPE_CODE = "out_of_scope"
REASON_NOT_IN_TENANT = "The organisation has no mailbox with this address."
REASON_WRONG_TENANT = ("The consent came from another Microsoft 365 organisation ({got}) than the one this link "
                       "was made for ({want}); it was not used. Ask the administrator of {want} to open the link.")


# --- consent states ----------------------------------------------------------------------------------

def _mac(secret: str, state_id: str) -> str:
    return hmac.new(secret.encode(), f"tenant-consent:{state_id}".encode(), hashlib.sha256).hexdigest()[:32]


def sign_state(secret: str, state_id: str) -> str:
    return f"{state_id}.{_mac(secret, state_id)}"


def verify_state(secret: str, state: str) -> str | None:
    state_id, _, mac = state.partition(".")
    return state_id if state_id and mac and hmac.compare_digest(_mac(secret, state_id), mac) else None


def admin_callback_url(settings: Settings) -> str:
    return f"{settings.app_url}/oauth/microsoft365/admin-callback"


def admin_consent_url(settings: Settings, tenant_id: str, state: str) -> str:
    query = urlencode({"client_id": settings.client_id, "scope": ADMIN_CONSENT_SCOPE,
                       "redirect_uri": admin_callback_url(settings), "state": state})
    return f"{settings.login_url}/{quote(tenant_id, safe='')}/v2.0/adminconsent?{query}"


async def new_consent_state(db: asyncpg.Pool | asyncpg.Connection, settings: Settings, tenant_connection_id: str,
                            account_id: str, tenant_id: str) -> str:
    state_id = secrets.token_urlsafe(24)
    await TenantConsentStates(db).create(state_id, tenant_connection_id, account_id, tenant_id, STATE_TTL)
    return sign_state(settings.session_secret, state_id)


@dataclass(frozen=True)
class RedeemedState:
    tenant_connection_id: str
    account_id: str
    tenant_id: str


class StateRefused(Exception):
    """The state cannot be used: the message says why, plainly."""


async def redeem_state(pool: asyncpg.Pool, settings: Settings, state: str) -> RedeemedState:
    """Single use: the first callback to present a valid, unexpired state consumes it."""
    state_id = verify_state(settings.session_secret, state)
    if state_id is None:
        raise StateRefused("This consent link is not one mailsync made (its state is not valid).")
    states = TenantConsentStates(pool)
    row = await states.use(state_id)
    if row is not None:
        return RedeemedState(str(row["tenant_connection_id"]), row["account_id"], row["tenant_id"])
    known = await states.lookup(state_id)
    if known is None:
        raise StateRefused("This consent link is no longer known; create a new one.")
    if known["used_at"] is not None:
        raise StateRefused("This consent link was already used; each link works once. Create a new one.")
    raise StateRefused("This consent link has expired; create a new one.")


# --- tenant connection status -------------------------------------------------------------------------

async def set_tenant_status(pool: asyncpg.Pool, tenant_connection_id: str, status: str, reason: str | None,
                            error_code: str | None, *, publisher: Publisher | None = None) -> bool:
    """Record a change (none when nothing differs) with its tenant_connection.status event in the outbox, in
    one transaction; the event is published after the commit when `publisher` is given, else by the relay."""
    async with pool.acquire() as conn, conn.transaction():
        ids = await record_tenant_status(conn, tenant_connection_id, status, reason, error_code)
    await outbox.publish_now(pool, publisher, ids)
    return bool(ids)


async def record_tenant_status(conn: asyncpg.Connection, tenant_connection_id: str, status: str,
                               reason: str | None, error_code: str | None) -> list[int]:
    """Inside the caller's transaction: the change and its event (the outbox ids, to publish after the
    commit; none when nothing differs)."""
    row = await TenantConnections(conn).change_status(tenant_connection_id, status, reason, error_code)
    if row is None:
        return []
    log.info("tenant connection status changed", extra={"tenant_connection_id": tenant_connection_id,
                                                          "status": status, "error_code": error_code})
    return await tenant_status.record(conn, row)


async def revoke_consent(pool: asyncpg.Pool, status: StatusReporter, tenant_connection_id: str,
                         failure: Classified) -> int:
    """Consent withdrawn (the token endpoint says so): the tenant connection and every mailbox it enrolled
    change in one transaction, published after the commit. Returns how many mailboxes changed."""
    async with pool.acquire() as conn, conn.transaction():
        moved = await TenantConnections(conn).revoke_consent(tenant_connection_id, failure.reason,
                                                             failure.error_code)
        ids = await tenant_status.record(conn, moved) if moved is not None else []
        mailboxes = await TenantModeConnections(conn).connected(tenant_connection_id) if moved is not None else []
        changed = [await status.record(conn, connection_id, ConnectionStatus.CONSENT_REQUIRED,
                                       REASON_MAILBOX_CONSENT, failure.error_code) for connection_id in mailboxes]
    if moved is not None:
        log.warning("tenant consent revoked", extra={"tenant_connection_id": tenant_connection_id,
                                                     "error_code": failure.error_code, "mailboxes": len(mailboxes)})
        await outbox.publish_now(pool, status.publisher, ids)
    for row in changed:
        if row is not None:
            await status.publish(row)
    return len(mailboxes)


# --- enrolment ----------------------------------------------------------------------------------------

@dataclass
class TenantDeps:
    pool: asyncpg.Pool
    graph: GraphClient
    app: AppCredentials
    status: StatusReporter
    settings: Settings
    tokens: TokenService | None = None  # to delete a user's own subscriptions when the tenant takes over


@dataclass(frozen=True)
class Candidate:
    user_id: str  # directory user id, or shared:<mailbox_id>
    address: str
    shared_mailbox_id: str | None = None


async def check_tenant_domains(deps: TenantDeps, tenant_connection_id: str, account_id: str, tenant_id: str
                               ) -> str | None:
    """None when the tenant's verified domains cover every mail domain of the account's directory users;
    else the plain reason, recorded on the tenant connection (which enrols nobody)."""
    await deps.app.token(tenant_id, fresh=True)  # a consent just given: no token cached from before it
    domains = await verified_domains(deps.settings, deps.app, tenant_id)
    addresses = [r["email"] for r in await AccountUsers(deps.pool).live(account_id)]
    verdict = check_domains(addresses, domains)
    await TenantConnections(deps.pool).record_verified_domains(tenant_connection_id, sorted(set(domains)))
    if verdict.ok:
        return None
    await set_tenant_status(deps.pool, tenant_connection_id, "pending_consent", verdict.reason,
                            "domain_not_verified", publisher=deps.status.publisher)
    return verdict.reason


async def _candidates(pool: asyncpg.Pool, account_id: str, verified: set[str]) -> list[Candidate]:
    users = await AccountUsers(pool).live(account_id)
    shared = await SharedMailboxes(pool).of_account(account_id)
    found = [Candidate(r["user_id"], r["email"]) for r in users if mail_domain(r["email"]) in verified]
    found += [Candidate(f"{SHARED_PREFIX}{r['mailbox_id']}", r["address"], str(r["mailbox_id"])) for r in shared]
    return found


@dataclass(frozen=True)
class PassPlan:
    enrol: list[Candidate]  # looked up and probed, in candidate order
    unenrol: list[tuple[str, str]]  # (user_id, connection_id) no longer candidates


def plan_pass(candidates: Sequence[Candidate], decisions: Mapping[str, Mapping[str, Any]],
              enrolled: Mapping[str, Mapping[str, Any]], now: datetime) -> PassPlan:
    """What an enrolment pass does, from the candidates, the last decision per user_id (state, checked_at)
    and the tenant-mode connections per user_id (connection_id, status)."""
    enrol = []
    for candidate in candidates:
        previous = decisions.get(candidate.user_id)
        connection = enrolled.get(candidate.user_id)
        if previous is not None and previous["state"] == "enrolled" and connection is not None \
                and connection["status"] in ("connected", "disconnected"):
            continue  # synced already, or the user disconnected it themselves (respected, not re-enrolled)
        if previous is not None and previous["state"] in ("out_of_scope", "failed") \
                and previous["checked_at"] > now - RECHECK_OUT_OF_SCOPE:
            continue
        enrol.append(candidate)
    wanted = {c.user_id for c in candidates}
    unenrol = [(user_id, str(connection["connection_id"])) for user_id, connection in enrolled.items()
               if user_id not in wanted and connection["status"] != "disconnected"]
    return PassPlan(enrol, unenrol)


async def sync_tenant(deps: TenantDeps, tenant_connection_id: str) -> dict[str, int]:
    """One enrolment pass: every candidate not enrolled yet is looked up and probed (app token); mailboxes
    no longer candidates (user deleted, shared mailbox removed) are unenrolled. Consent revoked on the way
    marks everything at once (revoke_consent). Returns counts of what changed."""
    tenants = TenantConnections(deps.pool)
    row = await tenants.get(tenant_connection_id)
    counts = {"enrolled": 0, "out_of_scope": 0, "failed": 0, "unenrolled": 0}
    if row is None or row["status"] != "connected":
        return counts
    account_id, tenant_id = row["account_id"], row["tenant_id"]
    try:
        token, verified = await _token_and_domains(deps, tenant_id)
    except GraphError as exc:
        if exc.classified.severity is Severity.CONSENT:
            await revoke_consent(deps.pool, deps.status, tenant_connection_id, exc.classified)
            return counts
        raise
    await tenants.record_verified_domains(tenant_connection_id, sorted(verified))
    candidates = await _candidates(deps.pool, account_id, verified)
    decided = TenantMailboxes(deps.pool)
    known = await decided.decisions(tenant_connection_id)
    enrolled_rows = await TenantModeConnections(deps.pool).enrolled(tenant_connection_id)
    plan = plan_pass(candidates, known, enrolled_rows, datetime.now(UTC))
    for candidate in plan.enrol:
        outcome = await _enrol_one(deps, tenant_connection_id, account_id, tenant_id, token, candidate)
        counts[outcome] += 1
    for user_id, connection_id in plan.unenrol:
        await unenrol(deps, connection_id, token, REASON_MAILBOX_GONE)
        await decided.forget(tenant_connection_id, user_id)
        counts["unenrolled"] += 1
    await tenants.mark_synced(tenant_connection_id)
    return counts


async def _token_and_domains(deps: TenantDeps, tenant_id: str) -> tuple[str, set[str]]:
    """The app token and the tenant's verified domains. Graph refusing the cached token (issued before a
    revocation) sends us to the token endpoint once more, whose answer decides (AADSTS700016: consent gone)."""
    token, _ = await deps.app.token(tenant_id)
    try:
        return token, set(await verified_domains(deps.settings, deps.app, tenant_id))
    except GraphError as exc:
        if exc.status != 401:
            raise
    token, _ = await deps.app.token(tenant_id, fresh=True)
    return token, set(await verified_domains(deps.settings, deps.app, tenant_id))


async def _enrol_one(deps: TenantDeps, tenant_connection_id: str, account_id: str, tenant_id: str, token: str,
                     candidate: Candidate) -> str:
    user = quote(candidate.address, safe="@")
    decided = TenantMailboxes(deps.pool)
    try:
        profile = await deps.graph.request(
            "GET", f"/users/{user}", token, mailbox=candidate.address,
            params={"$select": "id,mail,userPrincipalName,proxyAddresses"})
        graph_user_id = str(profile["id"])
        # Mail access decides the application access policy (Exchange's, not the directory's).
        await deps.graph.get_folder(token, graph_user_id, "inbox")
    except NotFound:
        await decided.decide(tenant_connection_id, candidate.user_id, account_id, "failed", REASON_NOT_IN_TENANT)
        return "failed"
    except GraphError as exc:
        if exc.status == 403:
            await decided.decide(tenant_connection_id, candidate.user_id, account_id, "out_of_scope",
                                 REASON_OUT_OF_SCOPE)
            return "out_of_scope"
        if exc.transient:
            raise
        await decided.decide(tenant_connection_id, candidate.user_id, account_id, "failed",
                             exc.classified.reason)
        return "failed"
    primary = normalize_address(str(profile.get("mail") or profile.get("userPrincipalName") or "")) \
        or candidate.address.lower()
    proxies = profile.get("proxyAddresses") or []
    aliases = sorted(parse_proxy_addresses([str(p) for p in proxies] if isinstance(proxies, list) else [])
                     | {primary})
    await _replace_delegated_subscriptions(deps, candidate.user_id)
    async with deps.pool.acquire() as conn, conn.transaction():
        await Directory(conn).ensure_account(account_id)
        last_synced_at = await MailboxConnections(conn).last_synced_at(candidate.user_id)
        connection_id = await TenantModeConnections(conn).enrol(
            account_id=account_id, user_id=candidate.user_id, tenant_id=tenant_id, graph_user_id=graph_user_id,
            address=primary, aliases=aliases, tenant_connection_id=tenant_connection_id,
            shared_mailbox_id=candidate.shared_mailbox_id)
        changed = await deps.status.record(conn, connection_id, ConnectionStatus.CONNECTED, None, None,
                                           signed_in=True)
        await queue_backfill(SyncJobs(conn), deps.settings, connection_id, last_synced_at)
        await TenantMailboxes(conn).decide(tenant_connection_id, candidate.user_id, account_id, "enrolled", None)
    if changed is not None:
        await deps.status.publish(changed)
    log.info("mailbox enrolled through the tenant connection",
             extra={"connection_id": connection_id, "tenant_connection_id": tenant_connection_id})
    return "enrolled"


async def mailbox_outside_policy(pool: asyncpg.Pool, status: StatusReporter, connection_id: str) -> bool:
    """An enrolled mailbox the application access policy now excludes (an app-only call answered 403
    ErrorAccessDenied): out_of_scope like one excluded at enrolment, never a permanent failure. In one
    transaction the mailbox becomes consent_required with the plain reason (so nothing polls or renews it),
    its subscriptions pending deletion, and its tenant_mailboxes row out_of_scope, checked now: the enrolment
    pass rechecks it after RECHECK_OUT_OF_SCOPE and re-enrols it (the gap back-filled) once the policy
    includes it again. False when the connection is not a tenant-mode one (the caller's error stands)."""
    async with pool.acquire() as conn, conn.transaction():
        row = await TenantModeConnections(conn).lock_enrolled(connection_id)
        if row is None:
            return False
        changed = await status.record(conn, connection_id, ConnectionStatus.CONSENT_REQUIRED, REASON_OUT_OF_SCOPE,
                                      OUT_OF_SCOPE_CODE)
        await mark_for_deletion(conn, connection_id)
        await TenantMailboxes(conn).decide(row["tenant_connection_id"], row["user_id"], row["account_id"],
                                           "out_of_scope", REASON_OUT_OF_SCOPE)
    if changed is not None:
        log.warning("enrolled mailbox outside the application access policy",
                    extra={"connection_id": connection_id, "tenant_connection_id": row["tenant_connection_id"]})
        await status.publish(changed)
    return True


async def _replace_delegated_subscriptions(deps: TenantDeps, user_id: str) -> None:
    """Tenant wins: a user's own (delegated) subscriptions are deleted at Graph with the user's token, best
    effort, before the row switches to tenant mode; what remains expires at Graph unrenewed."""
    row = await TenantModeConnections(deps.pool).own_connected(user_id)
    if row is None:
        return
    connection_id = str(row["connection_id"])
    async with deps.pool.acquire() as conn, conn.transaction():
        pending = await mark_for_deletion(conn, connection_id)
    token = await _user_token(deps, connection_id)
    if token is not None and pending:
        with contextlib.suppress(GraphError):
            await delete_pending(deps.pool, deps.graph, token=token, graph_user_id=row["graph_user_id"] or "",
                                 subscription_ids=pending)


async def _user_token(deps: TenantDeps, connection_id: str) -> str | None:
    if deps.tokens is None:
        return None
    try:
        token: str = await deps.tokens.access_token(connection_id)
    except Exception:  # the user's grant may be gone already: the subscriptions then die at Graph
        return None
    return token


async def unenrol(deps: TenantDeps, connection_id: str, token: str | None, reason: str) -> None:
    """Stop reading one tenant-mode mailbox: status disconnected, back to user mode (a later sign-in of the
    user works as usual), subscriptions deleted at Graph with the app token after the commit."""
    async with deps.pool.acquire() as conn, conn.transaction():
        graph_user_id = await TenantModeConnections(conn).back_to_user_mode(connection_id)
        changed = await deps.status.record(conn, connection_id, ConnectionStatus.DISCONNECTED, reason, None)
        pending = await mark_for_deletion(conn, connection_id)
    if changed is not None:
        await deps.status.publish(changed)
    if token is not None and pending:
        await delete_pending(deps.pool, deps.graph, token=token, graph_user_id=graph_user_id or "",
                             subscription_ids=pending)


async def disconnect_tenant(deps: TenantDeps, tenant_connection_id: str) -> int:
    """DELETE: the tenant connection is disconnected and every mailbox it enrolled unenrolled (their
    subscriptions deleted at Graph with the app token, best effort; the rest expire unrenewed). Returns
    how many mailboxes stopped."""
    row = await TenantConnections(deps.pool).get(tenant_connection_id)
    if row is None:
        return 0
    await set_tenant_status(deps.pool, tenant_connection_id, "disconnected", REASON_DISCONNECTED, None,
                            publisher=deps.status.publisher)
    # Consent links handed out before are void: a late administrator reconnects nothing.
    await TenantConsentStates(deps.pool).void_all(tenant_connection_id)
    connections = list((await TenantModeConnections(deps.pool).enrolled(tenant_connection_id)).values())
    token: str | None = None
    if row["status"] == "connected":
        try:
            token, _ = await deps.app.token(row["tenant_id"])
        except GraphError:
            token = None  # consent gone already: the subscriptions die at Graph unrenewed
    for connection in connections:
        try:
            await unenrol(deps, str(connection["connection_id"]), token, REASON_DISCONNECTED)
        except GraphError as exc:
            log.warning("subscriptions left pending deletion", extra={
                "connection_id": str(connection["connection_id"]), "error_code": exc.classified.error_code})
    await TenantMailboxes(deps.pool).forget_all(tenant_connection_id)
    return len(connections)


async def mailbox_counts(db: asyncpg.Pool | asyncpg.Connection, tenant_connection_id: str) -> dict[str, int]:
    return await TenantMailboxes(db).counts(tenant_connection_id)


async def claim_due(pool: asyncpg.Pool, interval: timedelta, limit: int = 20) -> list[str]:
    """Connected tenant connections due an enrolment pass, claimed with a lease (one replica each)."""
    return await TenantConnections(pool).claim_due(limit, SYNC_LEASE, interval)


async def release(pool: asyncpg.Pool, tenant_connection_id: str) -> None:
    await TenantConnections(pool).release(tenant_connection_id)


def view(row: Any, counts: dict[str, int], admin_consent_url: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "tenant_connection_id": str(row["tenant_connection_id"]), "account_id": row["account_id"],
        "tenant_id": row["tenant_id"], "status": row["status"], "reason": row["reason"],
        "error_code": row["error_code"], "mailboxes": counts,
        "verified_domains": list(row["verified_domains"] or []),
        "consented_at": row["consented_at"].isoformat() if row["consented_at"] else None,
    }
    if admin_consent_url is not None:
        out["admin_consent_url"] = admin_consent_url
    return out

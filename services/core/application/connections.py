"""Mailbox connections: status changes (recorded, published) and tokens (encrypted, refreshed once)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import asyncpg
from prometheus_client import Counter

from services.core.adapters.app_credential import AppCredentials
from services.core.adapters.crypto import TokenBox, TokenDecryptError
from services.core.adapters.graph.errors import AccessTokenRejected, Classified, GraphError, Severity
from services.core.adapters.graph.identity import IdentityClient, TokenSet
from services.core.adapters.kafka import Publisher
from services.core.adapters.store.jobs import SyncJobs
from services.core.adapters.store.mailbox.connections import Connection, MailboxConnections
from services.core.adapters.store.mailbox.tokens import MailboxTokens, TokenState
from services.core.adapters.store.outbox import Outbox
from services.core.adapters.tenant_rules import outside_access_policy
from services.core.application import notice_store, outbox
from services.core.application.backfill import queue_backfill
from services.core.domain import events
from services.core.domain.event_types import ConnectionStatusChanged, to_value
from services.core.domain.model import ConnectionStatus

__all__ = ["REFRESH_AHEAD", "Connection", "NotConnected", "StatusChange", "StatusReporter", "TokenService",
           "get_connection", "status_change_event", "status_event"]

log = logging.getLogger(__name__)

TOKEN_REFRESHES = Counter("mailsync_token_refreshes_total", "Token refreshes by outcome", ["outcome"])
REFRESH_AHEAD = timedelta(minutes=5)
REFRESH_LEASE = timedelta(seconds=30)  # longer than one refresh call with its retries
UNREADABLE_SIGN_IN = ("mailsync can no longer read the stored sign-in for this mailbox (its encryption key is "
                    "not available). Reconnect the mailbox to resume; mail from the gap is imported.")
T = TypeVar("T")


class NotConnected(Exception):
    """The mailbox has no usable grant; the status says why."""

    def __init__(self, connection_id: str, status: str):
        super().__init__(f"connection {connection_id} is {status}")
        self.status = status


async def get_connection(db: asyncpg.Pool | asyncpg.Connection, connection_id: str) -> Connection | None:
    return await MailboxConnections(db).get(connection_id)


def status_change_event(row: Mapping[str, Any]) -> ConnectionStatusChanged:
    """connection.status for a change just recorded (a new event_id per change, kept by its outbox row)."""
    return ConnectionStatusChanged(
        connection_id=str(row["connection_id"]), user_id=row["user_id"], account_id=row["account_id"],
        status=row["status"], reason=row["reason"], error_code=row["error_code"])


def status_event(row: Mapping[str, Any]) -> dict[str, Any]:
    return to_value(status_change_event(row))


@dataclass(frozen=True)
class StatusChange:
    """A status change recorded in a transaction, with the outbox rows of its events (the status, and the
    notice it opened or resolved): `StatusReporter.publish` it once the transaction committed."""

    connection_id: str
    status: str
    outbox_ids: tuple[int, ...]


class StatusReporter:
    """Changes a connection's status only when it differs; every change is recorded with its
    connection.status event in the outbox, and the event published after the commit."""

    def __init__(self, pool: asyncpg.Pool, publisher: Publisher, app_url: str) -> None:
        self._pool = pool
        self._publisher = publisher
        self._app_url = app_url  # the settings page notices link to

    @property
    def publisher(self) -> Publisher:
        """For other status events written with a change (tenant_status's outbox)."""
        return self._publisher

    async def set_status(
        self, connection_id: str, status: ConnectionStatus, reason: str | None, error_code: str | None, *,
        signed_in: bool = False,
    ) -> bool:
        """Record the change (its own transaction) and publish it."""
        change = await self.record(self._pool, connection_id, status, reason, error_code, signed_in=signed_in)
        if change is None:
            return False
        await self.publish(change)
        return True

    async def record(
        self, db: asyncpg.Pool | asyncpg.Connection, connection_id: str, status: ConnectionStatus,
        reason: str | None, error_code: str | None, *, signed_in: bool = False,
    ) -> StatusChange | None:
        """Record the change and queue its event in the outbox (inside the caller's transaction when `db` is
        one) without publishing it; the caller publishes the returned change once committed (the outbox relay
        does if it never does). None when nothing changed. The connection's notice
        (services/core/application/notice_store.py) is opened or closed in the same transaction, its event queued with
        the status event. `signed_in`: the user (or the tenant's enrolment) just connected the mailbox, the only
        change a disconnected connection takes."""
        if isinstance(db, asyncpg.Pool):
            async with db.acquire() as conn, conn.transaction():
                return await self.record(conn, connection_id, status, reason, error_code, signed_in=signed_in)
        changed = await MailboxConnections(db).change_status(connection_id, status.value, reason, error_code,
                                                             signed_in=signed_in)
        if changed is None:
            return None
        row = asdict(changed)
        ids = await Outbox(db).add([outbox.entry(events.CONNECTION_STATUS, changed.connection_id,
                                                 status_change_event(row))])
        ids += await notice_store.on_status_change(db, row, app_url=self._app_url)
        log.info("connection status changed", extra={"connection_id": connection_id, "status": status.value,
                                                      "error_code": error_code})
        return StatusChange(changed.connection_id, changed.status, tuple(ids))

    async def publish(self, change: StatusChange) -> None:
        """After the commit. Never raises: an event Kafka did not take is left to the outbox relay."""
        await outbox.publish_now(self._pool, self._publisher, change.outbox_ids)


class TokenService:
    """Hands out access tokens, refreshing ahead of expiry; one replica refreshes a mailbox at a time."""

    def __init__(self, pool: asyncpg.Pool, box: TokenBox, identity: IdentityClient,
                 status: StatusReporter, app: AppCredentials | None = None, *,
                 store: MailboxTokens | None = None) -> None:
        self._pool = pool
        self._tokens = store or MailboxTokens(pool)  # `store`: a unit test's in-memory fake
        self._box = box
        self._identity = identity
        self._status = status
        # Tenant-mode mailboxes get app-only tokens (azure-identity caches them per tenant).
        self._app = app or AppCredentials(identity.settings, identity.session)
        # Decrypted access tokens by connection, so a burst of messages costs no query each.
        # Callers check the connection's status themselves; a forced refresh drops the entry.
        self._cache: dict[str, tuple[str, datetime]] = {}

    def seal(self, connection_id: str, tokens: TokenSet) -> tuple[bytes, bytes]:
        return (self._box.encrypt(tokens.access_token, bound_to=connection_id),
                self._box.encrypt(tokens.refresh_token, bound_to=connection_id))

    async def store(self, conn: asyncpg.Connection, connection_id: str, tokens: TokenSet) -> None:
        access, refresh = self.seal(connection_id, tokens)
        await MailboxTokens(conn).store(connection_id, access, refresh, tokens.expires_at, tokens.scopes)

    async def call(self, connection_id: str, fn: Callable[[str], Awaitable[T]]) -> T:
        """Run a Graph call with the mailbox's token; see call_with_expiry."""
        async def with_token(token: str, _expires_at: datetime) -> T:
            return await fn(token)
        return await self.call_with_expiry(connection_id, with_token)

    async def call_with_expiry(self, connection_id: str, fn: Callable[[str, datetime], Awaitable[T]], *,
                               fresh: Callable[[datetime], bool] | None = None) -> T:
        """Run a Graph call with the mailbox's token and that token's expiry.

        `fresh(expires_at)` False makes the call refresh first, once (a subscription PATCH wants a token that
        outlives the one the subscription holds). A rejected token (401, or a 403 claims challenge from
        Conditional Access: Graph revoked it early, as continuous access evaluation does) gets one forced
        refresh that passes the challenge's claims, merged with cp1, to the token endpoint; the refresh's
        outcome decides the mailbox's status (AADSTS50173 after a password reset, 53003 when Conditional
        Access blocks it: one status change, NotConnected raised). A token rejected again right after a
        successful refresh marks the mailbox with the rejection's reason."""
        token, expires_at = await self.access_token_with_expiry(connection_id, accept=fresh)
        try:
            return await fn(token, expires_at)
        except AccessTokenRejected as first:
            claims = first.challenge.claims if first.challenge is not None else None
            token, expires_at = await self.access_token_with_expiry(connection_id, force_refresh=True,
                                                                    claims=claims)
            try:
                return await fn(token, expires_at)
            except AccessTokenRejected as exc:
                await self.mark_failed(connection_id, exc)
                raise NotConnected(connection_id, _failed_status(exc).value) from exc
        except GraphError as exc:
            if outside_access_policy(exc.status, exc.classified.error_code) and await self.out_of_scope(connection_id):
                self.forget(connection_id)
                raise NotConnected(connection_id, ConnectionStatus.CONSENT_REQUIRED.value) from exc
            raise

    async def out_of_scope(self, connection_id: str) -> bool:
        """A tenant-mode mailbox the organisation's access policy now excludes becomes out_of_scope, rechecked
        by the enrolment pass (tenant.mailbox_outside_policy); False for any other mailbox (its error stands)."""
        from services.core.application.tenant import mailbox_outside_policy  # tenant builds on this module
        return await mailbox_outside_policy(self._pool, self._status, connection_id)

    async def access_token(self, connection_id: str, *, force_refresh: bool = False,
                           claims: Mapping[str, Any] | None = None) -> str:
        token, _ = await self.access_token_with_expiry(connection_id, force_refresh=force_refresh, claims=claims)
        return token

    async def access_token_with_expiry(self, connection_id: str, *, force_refresh: bool = False,
                                       claims: Mapping[str, Any] | None = None,
                                       accept: Callable[[datetime], bool] | None = None) -> tuple[str, datetime]:
        """`claims`: what a claims challenge asked for; implies a refresh (the cached token was refused).
        `accept(expires_at)`: a cached or stored token it refuses is refreshed (once) like an expiring one."""
        force_refresh = force_refresh or claims is not None
        cached = self._cache.get(connection_id)
        if force_refresh:
            self._cache.pop(connection_id, None)
        elif cached is not None and _usable(cached[1], accept):
            return cached
        found = await self._from_db(connection_id, force_refresh, claims, accept)
        self._cache[connection_id] = found
        return found

    def forget(self, connection_id: str) -> None:
        self._cache.pop(connection_id, None)

    async def _from_db(self, connection_id: str, force_refresh: bool, claims: Mapping[str, Any] | None = None,
                       accept: Callable[[datetime], bool] | None = None) -> tuple[str, datetime]:
        state = await self._tokens.state(connection_id)
        if state is not None and state.mode == "tenant" and state.status == ConnectionStatus.CONNECTED:
            return await self._app_token(connection_id, state, force_refresh, claims)
        if state is None or state.status != ConnectionStatus.CONNECTED or state.access_token_enc is None:
            self.forget(connection_id)
            raise NotConnected(connection_id, state.status if state else "unknown")
        expires_at = state.access_expires_at
        if not force_refresh and expires_at is not None and _usable(expires_at, accept):
            return await self._open(connection_id, state.access_token_enc), expires_at
        return await self._refresh(connection_id, seen_expiry=expires_at, claims=claims)

    async def _open(self, connection_id: str, blob: bytes) -> str:
        """Decrypt a stored token. One that cannot be read (its key was dropped, the blob damaged) is the
        connection's problem, not the caller's: the connection is marked and NotConnected raised, so no
        loop retries it forever and every other mailbox carries on."""
        try:
            return self._box.decrypt(blob, bound_to=connection_id)
        except TokenDecryptError as exc:
            log.error("stored token unreadable", extra={"connection_id": connection_id, "error": str(exc)})
            self.forget(connection_id)
            await self._status.set_status(connection_id, ConnectionStatus.RECONNECT_REQUIRED, UNREADABLE_SIGN_IN,
                                          "token_unreadable")
            raise NotConnected(connection_id, ConnectionStatus.RECONNECT_REQUIRED.value) from None

    async def _refresh(self, connection_id: str, *, seen_expiry: datetime | None,
                       claims: Mapping[str, Any] | None = None) -> tuple[str, datetime]:
        """Claim a refresh lease (short transaction), call the identity platform with no transaction open,
        record the outcome (short transaction). A replica that finds the lease taken waits for the
        holder's result instead of refreshing the same grant twice. The new refresh token that comes back
        is stored; the one used is not assumed dead (Microsoft's stay valid), only superseded."""
        store = self._tokens
        deadline = asyncio.get_running_loop().time() + REFRESH_LEASE.total_seconds()
        while (claimed := await store.claim_refresh(connection_id, seen_expiry, REFRESH_LEASE)) is None:
            state = await store.state(connection_id)
            if state is None or state.status != ConnectionStatus.CONNECTED or state.refresh_token_enc is None:
                raise NotConnected(connection_id, state.status if state else "unknown")
            if state.access_expires_at != seen_expiry and state.access_token_enc is not None \
                    and state.access_expires_at is not None:
                # Another replica refreshed meanwhile.
                return await self._open(connection_id, state.access_token_enc), state.access_expires_at
            if asyncio.get_running_loop().time() > deadline:
                raise GraphError(Classified(Severity.TRANSIENT, "refresh_in_progress",
                                            "Another replica's token refresh did not finish in time."), None)
            await asyncio.sleep(0.2)  # the holder's lease is short; its result is what we want
        refresh_token = await self._open(connection_id, claimed.refresh_token_enc)
        try:
            tokens = await self._identity.refresh(refresh_token, claimed.tenant_id, claims)
        except GraphError as exc:
            TOKEN_REFRESHES.labels(exc.classified.severity.value).inc()
            await store.release_refresh(connection_id)
            if exc.classified.severity not in (Severity.RECONNECT, Severity.CONSENT):
                raise  # transient, or our own misconfiguration: never the user's status
            await self.mark_failed(connection_id, exc)
            raise NotConnected(connection_id, exc.classified.severity.value) from exc
        TOKEN_REFRESHES.labels("ok").inc()
        access, refresh = self.seal(connection_id, tokens)
        if not await store.record_refresh(connection_id, access, refresh, tokens.expires_at, tokens.scopes):
            self.forget(connection_id)
            raise NotConnected(connection_id, "disconnected")
        return tokens.access_token, tokens.expires_at

    async def _app_token(self, connection_id: str, state: TokenState, force_refresh: bool,
                         claims: Mapping[str, Any] | None) -> tuple[str, datetime]:
        """A tenant-mode mailbox: the tenant's app-only token. Consent withdrawn changes the tenant
        connection and all its mailboxes in one step (tenant.revoke_consent), never this one alone."""
        try:
            token, expires_at = await self._app.token(str(state.tenant_id), fresh=force_refresh, claims=claims)
            return token, expires_at
        except GraphError as exc:
            if exc.classified.severity is not Severity.CONSENT:
                raise  # transient, or the operator's credential: never a mailbox's status
            from services.core.application.tenant import revoke_consent  # tenant builds on this module
            self.forget(connection_id)
            await revoke_consent(self._pool, self._status, str(state.tenant_connection_id), exc.classified)
            raise NotConnected(connection_id, ConnectionStatus.CONSENT_REQUIRED.value) from exc

    async def mark_failed(self, connection_id: str, failure: GraphError) -> None:
        self.forget(connection_id)
        await self._status.set_status(connection_id, _failed_status(failure), failure.classified.reason,
                                      failure.classified.error_code)

    async def recover_readable(self, limit: int = 100) -> int:
        """Heal connections marked `token_unreadable` whose tokens this process can read: the user's
        sign-in was never at fault, only a replica that lacked a key (a key rollout reaching pods one at a
        time). Back to connected, with a back-fill of the gap and a poll now. Returns how many healed."""
        healed = 0
        for sealed in await self._tokens.marked_unreadable(limit):
            connection_id = sealed.connection_id
            blobs = [b for b in (sealed.access_token_enc, sealed.refresh_token_enc) if b is not None]
            try:
                if not blobs or not all(self._box.decrypt(b, bound_to=connection_id) for b in blobs):
                    continue
            except TokenDecryptError:
                continue  # still unreadable here: the user must reconnect, as the status says
            async with self._pool.acquire() as conn, conn.transaction():
                still = await MailboxTokens(conn).lock_still_unreadable(sealed)
                changed = still and await self._status.record(conn, connection_id, ConnectionStatus.CONNECTED,
                                                              None, None)
                if changed:
                    # The gap, as a reconnect imports it: mail a poll or the webhook saw while the token was
                    # unreadable is recorded not_seen, and a delta from the stored cursor would not return it.
                    connections = MailboxConnections(conn)
                    await queue_backfill(SyncJobs(conn), self._identity.settings, connection_id,
                                         await connections.last_synced_of(connection_id))
                    await connections.poll_now(connection_id, None)
            if changed:
                log.info("stored token readable again", extra={"connection_id": connection_id})
                await self._status.publish(changed)
                healed += 1
        return healed


def _usable(expires_at: datetime, accept: Callable[[datetime], bool] | None) -> bool:
    return expires_at > datetime.now(UTC) + REFRESH_AHEAD and (accept is None or accept(expires_at))


def _failed_status(failure: GraphError) -> ConnectionStatus:
    return (ConnectionStatus.CONSENT_REQUIRED if failure.classified.severity is Severity.CONSENT
            else ConnectionStatus.RECONNECT_REQUIRED)

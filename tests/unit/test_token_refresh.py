"""The token service's refresh decided without PostgreSQL: a lease claimed by one statement, the identity
platform called with nothing open, the outcome recorded by another statement, against an in-memory fake of
MailboxTokens (services/core/adapters/store/mailbox/tokens.py has the real one)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from services.core.adapters.crypto import TokenBox
from services.core.adapters.graph.errors import Classified, GraphError, Severity
from services.core.adapters.graph.identity import TokenSet
from services.core.adapters.store.mailbox.tokens import RefreshClaim, SealedTokens, TokenState
from services.core.application.connections import NotConnected, TokenService
from services.core.domain.model import ConnectionStatus

CONNECTION = "7d6c3d0e-0000-4000-8000-000000000002"
BOX = TokenBox((("k1", bytes(32)),))
SOON = datetime.now(UTC) + timedelta(minutes=1)  # inside the refresh margin
LATER = datetime.now(UTC) + timedelta(hours=1)


def sealed(text: str) -> bytes:
    return BOX.encrypt(text, bound_to=CONNECTION)


def connected(expires_at: datetime = SOON, *, access: str = "old-access") -> TokenState:
    return TokenState(status="connected", access_token_enc=sealed(access), refresh_token_enc=sealed("old-refresh"),
                      access_expires_at=expires_at, mode="user", tenant_id="tenant", tenant_connection_id=None)


@dataclass
class FakeTokens:
    """MailboxTokens over one connection's state; `lease` is the refresh lease (True while held)."""
    row: TokenState | None
    lease: bool = False
    lease_elsewhere: bool = False  # another replica holds the lease
    log: list[str] = field(default_factory=list)
    on_claim_refused: Any = None  # what another replica does while we wait

    async def state(self, connection_id: str) -> TokenState | None:
        self.log.append("state")
        return self.row

    async def claim_refresh(self, connection_id: str, seen_expiry: datetime | None,
                            lease: timedelta) -> RefreshClaim | None:
        self.log.append("claim")
        row = self.row
        if (row is None or row.status != "connected" or row.refresh_token_enc is None
                or row.access_expires_at != seen_expiry or self.lease or self.lease_elsewhere):
            if self.on_claim_refused is not None:
                self.on_claim_refused(self)
            return None
        self.lease = True
        return RefreshClaim(row.refresh_token_enc, row.tenant_id)

    async def release_refresh(self, connection_id: str) -> None:
        self.log.append("release")
        self.lease = False

    async def record_refresh(self, connection_id: str, access: bytes, refresh: bytes, expires_at: datetime,
                             scopes: list[str]) -> bool:
        self.log.append("record")
        if self.row is None or self.row.status != "connected" or not self.lease:
            return False
        self.row = replace(self.row, access_token_enc=access, refresh_token_enc=refresh, access_expires_at=expires_at)
        self.lease = False
        return True

    async def marked_unreadable(self, limit: int) -> list[SealedTokens]:
        return []


@dataclass
class FakeIdentity:
    outcome: TokenSet | GraphError
    calls: list[tuple[str, str | None]] = field(default_factory=list)

    async def refresh(self, refresh_token: str, tenant: str | None, claims: Any = None) -> TokenSet:
        self.calls.append((refresh_token, tenant))
        if isinstance(self.outcome, GraphError):
            raise self.outcome
        return self.outcome


@dataclass
class FakeStatus:
    changes: list[tuple[str, ConnectionStatus, str | None]] = field(default_factory=list)

    async def set_status(self, connection_id: str, status: ConnectionStatus, reason: str | None,
                         error_code: str | None) -> bool:
        self.changes.append((connection_id, status, error_code))
        return True


def service(store: FakeTokens, identity: FakeIdentity, status: FakeStatus) -> TokenService:
    return TokenService(None, BOX, identity, status, app=object(), store=store)  # type: ignore[arg-type]


FRESH = TokenSet(access_token="new-access", refresh_token="new-refresh", expires_at=LATER, scopes=("Mail.Read",))


def test_an_expiring_token_is_refreshed_under_the_lease_and_stored_sealed() -> None:
    store, identity, status = FakeTokens(connected()), FakeIdentity(FRESH), FakeStatus()
    tokens = service(store, identity, status)
    assert asyncio.run(tokens.access_token_with_expiry(CONNECTION)) == ("new-access", LATER)
    assert identity.calls == [("old-refresh", "tenant")]
    assert store.log == ["state", "claim", "record"] and not store.lease
    assert store.row is not None and BOX.decrypt(store.row.refresh_token_enc or b"", bound_to=CONNECTION) \
        == "new-refresh"  # the rotated refresh token supersedes the one used
    assert not status.changes


def test_a_usable_token_is_opened_without_a_refresh() -> None:
    store, identity = FakeTokens(connected(LATER)), FakeIdentity(FRESH)
    assert asyncio.run(service(store, identity, FakeStatus()).access_token(CONNECTION)) == "old-access"
    assert identity.calls == [] and store.log == ["state"]


def test_a_token_another_replica_refreshed_meanwhile_is_taken_as_it_is() -> None:
    def other_replica(store: FakeTokens) -> None:  # its refresh lands while our claim is refused
        store.lease_elsewhere = False
        store.row = connected(LATER, access="theirs")

    store = FakeTokens(connected(), lease_elsewhere=True, on_claim_refused=other_replica)
    identity = FakeIdentity(FRESH)
    assert asyncio.run(service(store, identity, FakeStatus()).access_token_with_expiry(CONNECTION)) \
        == ("theirs", LATER)
    assert identity.calls == []  # the grant is refreshed once, by the lease holder


@pytest.mark.parametrize("status", ["disconnected", "reconnect_required"])
def test_a_connection_that_stopped_being_connected_while_waiting_is_not_refreshed(status: str) -> None:
    def gone(store: FakeTokens) -> None:
        assert store.row is not None
        store.row = replace(store.row, status=status)

    store = FakeTokens(connected(), lease_elsewhere=True, on_claim_refused=gone)
    identity = FakeIdentity(FRESH)
    with pytest.raises(NotConnected) as caught:
        asyncio.run(service(store, identity, FakeStatus()).access_token(CONNECTION))
    assert caught.value.status == status and identity.calls == []


def test_a_revoked_grant_releases_the_lease_and_changes_the_status_once() -> None:
    revoked = GraphError(Classified(Severity.RECONNECT, "AADSTS50173", "Your password was reset."), 400)
    store, status = FakeTokens(connected()), FakeStatus()
    with pytest.raises(NotConnected) as caught:
        asyncio.run(service(store, FakeIdentity(revoked), status).access_token(CONNECTION))
    assert caught.value.status == "reconnect_required"
    assert store.log[-1] == "release" and not store.lease
    assert status.changes == [(CONNECTION, ConnectionStatus.RECONNECT_REQUIRED, "AADSTS50173")]


def test_a_transient_identity_failure_releases_the_lease_and_leaves_the_status() -> None:
    busy = GraphError(Classified(Severity.TRANSIENT, "http_503", "Try again."), 503)
    store, status = FakeTokens(connected()), FakeStatus()
    with pytest.raises(GraphError):
        asyncio.run(service(store, FakeIdentity(busy), status).access_token(CONNECTION))
    assert not store.lease and "record" not in store.log and status.changes == []


def test_a_disconnect_during_the_call_wins_over_the_refreshed_tokens() -> None:
    store = FakeTokens(connected())

    class Disconnecting(FakeIdentity):
        async def refresh(self, refresh_token: str, tenant: str | None, claims: Any = None) -> TokenSet:
            assert store.row is not None
            store.row, store.lease = replace(store.row, status="disconnected", access_token_enc=None,
                                             refresh_token_enc=None), False  # the wipe clears the lease
            return await super().refresh(refresh_token, tenant, claims)

    tokens = service(store, Disconnecting(FRESH), FakeStatus())
    with pytest.raises(NotConnected) as caught:
        asyncio.run(tokens.access_token(CONNECTION))
    assert caught.value.status == "disconnected"
    assert store.row is not None and store.row.access_token_enc is None  # nothing stored over the wipe
    assert CONNECTION not in tokens._cache


def test_an_unreadable_stored_token_marks_the_connection_and_stops() -> None:
    other_key = TokenBox((("k0", b"\x01" * 32),))
    state = replace(connected(LATER), access_token_enc=other_key.encrypt("x", bound_to=CONNECTION))
    status = FakeStatus()
    with pytest.raises(NotConnected):
        asyncio.run(service(FakeTokens(state), FakeIdentity(FRESH), status).access_token(CONNECTION))
    assert status.changes == [(CONNECTION, ConnectionStatus.RECONNECT_REQUIRED, "token_unreadable")]

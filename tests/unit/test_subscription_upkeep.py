"""The renewer's subscription passes decided without PostgreSQL or Graph: a lifecycle event, the missing
subscription pass and the pending deletions run against in-memory fakes of the repositories they use
(services/core/adapters/store/subscriptions.py and connection_upkeep.py have the real ones)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from services.core.adapters.graph.errors import Classified, GraphError, NotFound, Severity
from services.core.adapters.store.subscriptions import PendingDeletion, SubscriptionState
from services.core.application.connections import NotConnected
from services.renewer import cleanup
from services.renewer.lifecycle import handle_lifecycle
from services.renewer.subscriptions import RenewerDeps, ensure_subscriptions

CONNECTION = "7d6c3d0e-0000-4000-8000-000000000001"
SUB = "sub-1"
NOW = datetime.now(UTC)
ANSWERED_IN_TIME = SubscriptionState(NOW + timedelta(days=2), NOW + timedelta(minutes=40), None)
LAPSED = SubscriptionState(NOW + timedelta(days=2), NOW - timedelta(minutes=5), None)


def graph_error(code: str = "http_503") -> GraphError:
    return GraphError(Classified(Severity.TRANSIENT, code, "busy"), 503)


@dataclass
class FakeSubscriptions:
    """Subscriptions' renewal lease, state and pending deletions over dicts."""
    states: dict[str, SubscriptionState] = field(default_factory=dict)
    leased: set[str] = field(default_factory=set)  # held by another replica
    claims: list[str] = field(default_factory=list)
    released: list[str] = field(default_factory=list)
    forgotten: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # mailboxes without a live subscription
    pending: list[PendingDeletion] = field(default_factory=list)
    deletions: dict[str, str] = field(default_factory=dict)  # subscription id -> outcome

    async def renewal_state(self, subscription_id: str) -> SubscriptionState | None:
        return self.states.get(subscription_id)

    async def claim_renewal(self, subscription_id: str, lease: timedelta) -> bool:
        if subscription_id in self.leased:
            return False
        self.claims.append(subscription_id)
        self.leased.add(subscription_id)
        return True

    async def release_renewal(self, subscription_id: str, hold: timedelta = timedelta(0)) -> None:
        self.released.append(subscription_id)
        self.leased.discard(subscription_id)

    async def forget(self, subscription_id: str) -> None:
        self.forgotten.append(subscription_id)
        self.states.pop(subscription_id, None)

    async def mailboxes_without_one(self, limit: int) -> list[str]:
        return self.missing[:limit]

    async def forget_expired_deletions(self) -> int:
        return 0

    async def sweep_disconnected(self) -> int:
        return 0

    async def claim_deletions(self, limit: int, lease: timedelta) -> list[PendingDeletion]:
        return self.pending[:limit]

    async def release_deletion(self, subscription_id: str) -> None:
        self.deletions[subscription_id] = "released"

    async def deletion_failed(self, subscription_id: str, error_code: str) -> None:
        self.deletions[subscription_id] = f"failed {error_code}"

    async def deletion_done(self, subscription_id: str) -> None:
        self.deletions[subscription_id] = "done"


@dataclass
class FakeConnections:
    polled: list[str] = field(default_factory=list)

    async def poll_now(self, connection_id: str, account_id: str | None) -> bool:
        self.polled.append(connection_id)
        return True


@dataclass
class FakeUpkeep:
    failed: list[str] = field(default_factory=list)

    async def subscribe_failed(self, connection_id: str) -> None:
        self.failed.append(connection_id)

    async def wipe_stray_tokens(self, grace: timedelta) -> list[str]:
        return []


@dataclass
class FakeTokens:
    """TokenService.call: the call with a token, or the mailbox's NotConnected."""
    not_connected: set[str] = field(default_factory=set)

    async def call(self, connection_id: str, fn: Callable[[str], Awaitable[Any]]) -> Any:
        if connection_id in self.not_connected:
            raise NotConnected(connection_id, "reconnect_required")
        return await fn("token")


@dataclass
class FakeGraph:
    """delete_subscription answering from `answers` (an exception to raise), recording what was asked."""
    answers: dict[str, Exception] = field(default_factory=dict)
    deleted: list[str] = field(default_factory=list)

    async def delete_subscription(self, token: str, user: str, subscription_id: str) -> None:
        self.deleted.append(subscription_id)
        if subscription_id in self.answers:
            raise self.answers[subscription_id]


def deps(*, graph: FakeGraph | None = None, tokens: FakeTokens | None = None) -> RenewerDeps:
    made = RenewerDeps(pool=None, graph=graph or FakeGraph(), tokens=tokens or FakeTokens(),  # type: ignore[arg-type]
                       settings=None)  # type: ignore[arg-type]
    made.subscriptions = FakeSubscriptions()  # type: ignore[assignment]
    made.connections = FakeConnections()  # type: ignore[assignment]
    made.upkeep = FakeUpkeep()  # type: ignore[assignment]
    return made


def lifecycle(kind: str) -> dict[str, Any]:
    return {"type": "subscription.lifecycle", "event_id": "0b9f6f0e-0000-4000-8000-000000000009",
            "connection_id": CONNECTION, "subscription_id": SUB, "lifecycle_event": kind}


class Calls:
    """A stand-in for renew_one / ensure_one: counts calls, answers `result` or raises it."""

    def __init__(self, result: bool | Exception = True) -> None:
        self.result, self.calls = result, 0

    async def __call__(self, _deps: RenewerDeps, *_ids: str) -> bool:
        self.calls += 1
        if isinstance(self.result, Exception):
            raise self.result
        return self.result


# --- reauthorizationRequired -------------------------------------------------------------------------

async def test_a_reminder_for_an_unknown_subscription_changes_nothing() -> None:
    d, renew = deps(), Calls()
    await handle_lifecycle(lifecycle("reauthorizationRequired"), d, renew=renew, ensure=Calls())
    assert renew.calls == 0 and d.subscriptions.claims == [] and d.connections.polled == []  # type: ignore[attr-defined]


@pytest.mark.parametrize(("state", "polled"), [(ANSWERED_IN_TIME, []), (LAPSED, [CONNECTION])])
async def test_a_reminder_is_renewed_under_the_lease_and_caught_up_only_when_mail_may_be_missed(
        state: SubscriptionState, polled: list[str]) -> None:
    d, renew = deps(), Calls(True)
    d.subscriptions.states[SUB] = state  # type: ignore[attr-defined]
    await handle_lifecycle(lifecycle("reauthorizationRequired"), d, renew=renew, ensure=Calls())
    assert renew.calls == 1
    assert d.subscriptions.claims == [SUB] and d.subscriptions.released == [SUB]  # type: ignore[attr-defined]
    assert d.connections.polled == polled  # type: ignore[attr-defined]


@pytest.mark.parametrize(("state", "polled"), [(ANSWERED_IN_TIME, []), (LAPSED, [CONNECTION])])
async def test_a_reminder_met_while_another_replica_renews_is_not_doubled_but_still_caught_up(
        state: SubscriptionState, polled: list[str]) -> None:
    d, renew = deps(), Calls(True)
    d.subscriptions.states[SUB] = state  # type: ignore[attr-defined]
    d.subscriptions.leased.add(SUB)  # type: ignore[attr-defined]
    await handle_lifecycle(lifecycle("reauthorizationRequired"), d, renew=renew, ensure=Calls())
    assert renew.calls == 0 and d.subscriptions.released == []  # type: ignore[attr-defined]
    assert d.connections.polled == polled  # type: ignore[attr-defined]


async def test_a_failed_renewal_releases_the_lease_and_polls_nothing() -> None:
    d = deps()
    d.subscriptions.states[SUB] = LAPSED  # type: ignore[attr-defined]
    await handle_lifecycle(lifecycle("reauthorizationRequired"), d, renew=Calls(False), ensure=Calls())
    assert d.subscriptions.released == [SUB] and d.connections.polled == []  # type: ignore[attr-defined]
    with pytest.raises(RuntimeError):
        await handle_lifecycle(lifecycle("reauthorizationRequired"), d, renew=Calls(RuntimeError("db")),
                               ensure=Calls())
    assert d.subscriptions.released == [SUB, SUB] and d.subscriptions.leased == set()  # type: ignore[attr-defined]


# --- subscriptionRemoved and missed -------------------------------------------------------------------

@pytest.mark.parametrize(("outcome", "polled"), [(True, [CONNECTION]), (graph_error(), [CONNECTION]),
                                                 (NotConnected(CONNECTION, "reconnect_required"), [])])
async def test_a_removed_subscription_is_forgotten_recreated_and_caught_up_unless_not_connected(
        outcome: bool | Exception, polled: list[str]) -> None:
    d, ensure = deps(), Calls(outcome)
    d.subscriptions.states[SUB] = ANSWERED_IN_TIME  # type: ignore[attr-defined]
    await handle_lifecycle(lifecycle("subscriptionRemoved"), d, renew=Calls(), ensure=ensure)
    assert d.subscriptions.forgotten == [SUB] and ensure.calls == 1  # type: ignore[attr-defined]
    assert d.connections.polled == polled  # type: ignore[attr-defined]


async def test_a_missed_event_only_polls() -> None:
    d, renew, ensure = deps(), Calls(), Calls()
    await handle_lifecycle(lifecycle("missed"), d, renew=renew, ensure=ensure)
    assert (renew.calls, ensure.calls, d.connections.polled) == (0, 0, [CONNECTION])  # type: ignore[attr-defined]


# --- the missing-subscription pass --------------------------------------------------------------------

async def test_a_failed_create_backs_off_its_mailbox_only_and_a_not_connected_one_never() -> None:
    d = deps()
    d.subscriptions.missing = ["ok", "skipped", "not-connected", "graph", "bug"]  # type: ignore[attr-defined]
    answers: dict[str, bool | Exception] = {"ok": True, "skipped": False,
                                            "not-connected": NotConnected("not-connected", "reconnect_required"),
                                            "graph": graph_error(), "bug": RuntimeError("undecryptable")}

    async def ensure(_deps: RenewerDeps, connection_id: str) -> bool:
        answer = answers[connection_id]
        if isinstance(answer, Exception):
            raise answer
        return answer

    assert await ensure_subscriptions(d, ensure=ensure) == 1
    assert d.upkeep.failed == ["graph", "bug"]  # type: ignore[attr-defined]


# --- pending deletions --------------------------------------------------------------------------------

async def test_pending_deletions_record_each_outcome_and_one_failure_never_stops_the_others() -> None:
    rows = [PendingDeletion(f"s-{name}", f"c-{name}", "user") for name in ("ok", "gone", "busy", "revoked", "bug")]
    graph = FakeGraph(answers={"s-gone": NotFound(Classified(Severity.PERMANENT, "NotFound", "gone"), 404),
                               "s-busy": graph_error("http_503"), "s-bug": RuntimeError("undecryptable")})
    d = deps(graph=graph, tokens=FakeTokens(not_connected={"c-revoked"}))
    d.subscriptions.pending = rows  # type: ignore[attr-defined]
    assert await cleanup.clean_up_deletions(d) == 2
    assert d.subscriptions.deletions == {"s-ok": "done", "s-gone": "done", "s-busy": "failed http_503",  # type: ignore[attr-defined]
                                         "s-revoked": "released"}  # s-bug: left to its lease
    assert graph.deleted == ["s-ok", "s-gone", "s-busy", "s-bug"]

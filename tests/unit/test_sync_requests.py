"""Sync now and back-sync requests decided without PostgreSQL: the application functions run against
in-memory fakes of the repositories they take (services/core/adapters/store/ has the real ones)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest

from services.core.application.sync_requests import MAX_RANGE_DAYS, Refused, queue_backsync, queue_sync

ACCOUNT, OTHER = "acct-1", "acct-2"
CONNECTION = "7d6c3d0e-0000-4000-8000-000000000001"
UNTIL = datetime(2026, 11, 1, tzinfo=UTC)


@dataclass
class FakeConnections:
    """MailboxConnections' poll_now over a dict of connection -> account."""
    accounts: dict[str, str] = field(default_factory=lambda: {CONNECTION: ACCOUNT})
    polled: list[str] = field(default_factory=list)

    async def poll_now(self, connection_id: str, account_id: str | None) -> bool:
        if self.accounts.get(connection_id) is None or account_id not in (None, self.accounts[connection_id]):
            return False
        self.polled.append(connection_id)
        return True


@dataclass
class FakeJobs:
    """SyncJobs' queue_backsync: jobs only for connections of the account (None: the operator)."""
    accounts: dict[str, str] = field(default_factory=lambda: {CONNECTION: ACCOUNT})
    queued: list[tuple[str, datetime, datetime, bool]] = field(default_factory=list)

    async def queue_backsync(self, connection_id: str, account_id: str | None, *, since: datetime,
                             until: datetime, dry_run: bool) -> str | None:
        if self.accounts.get(connection_id) is None or account_id not in (None, self.accounts[connection_id]):
            return None
        self.queued.append((connection_id, since, until, dry_run))
        return f"job-{len(self.queued)}"


def _refused(call: object) -> Refused:
    with pytest.raises(Refused) as caught:
        asyncio.run(call)  # type: ignore[arg-type]
    return caught.value


def test_sync_now_queues_a_poll_of_a_connected_mailbox() -> None:
    connections = FakeConnections()
    asyncio.run(queue_sync(connections, CONNECTION, ACCOUNT, "connected"))
    assert connections.polled == [CONNECTION]


def test_sync_now_refuses_a_mailbox_that_is_not_connected_without_touching_it() -> None:
    connections = FakeConnections()
    refused = _refused(queue_sync(connections, CONNECTION, ACCOUNT, "reconnect_required"))
    assert (refused.http_status, refused.code) == (409, "not_connected")
    assert "reconnect_required" in str(refused) and connections.polled == []


def test_sync_now_of_another_accounts_connection_is_not_found() -> None:
    refused = _refused(queue_sync(FakeConnections(), CONNECTION, OTHER, "connected"))
    assert (refused.http_status, refused.code) == (404, "not_found")


def test_backsync_is_queued_with_its_range_and_dry_run() -> None:
    jobs = FakeJobs()
    since = UNTIL - timedelta(days=30)
    job_id = asyncio.run(queue_backsync(jobs, CONNECTION, None, "connected", since=since, until=UNTIL,
                                        dry_run=True))
    assert job_id == "job-1" and jobs.queued == [(CONNECTION, since, UNTIL, True)]


@pytest.mark.parametrize(("since", "status", "code", "http_status"), [
    (UNTIL, "connected", "bad_request", 400),  # an empty range
    (UNTIL + timedelta(days=1), "connected", "bad_request", 400),  # reversed
    (UNTIL - timedelta(days=MAX_RANGE_DAYS + 1), "connected", "bad_request", 400),  # over the cap
    (UNTIL - timedelta(days=1), "disconnected", "not_connected", 409),
])
def test_backsync_refusals_queue_nothing(since: datetime, status: str, code: str, http_status: int) -> None:
    jobs = FakeJobs()
    refused = _refused(queue_backsync(jobs, CONNECTION, ACCOUNT, status, since=since, until=UNTIL, dry_run=False))
    assert (refused.http_status, refused.code) == (http_status, code) and jobs.queued == []


def test_backsync_at_the_cap_is_accepted() -> None:
    jobs = FakeJobs()
    since = UNTIL - timedelta(days=MAX_RANGE_DAYS)
    asyncio.run(queue_backsync(jobs, CONNECTION, ACCOUNT, "connected", since=since, until=UNTIL, dry_run=False))
    assert len(jobs.queued) == 1


def test_backsync_of_another_accounts_connection_is_not_found() -> None:
    refused = _refused(queue_backsync(FakeJobs(), CONNECTION, OTHER, "connected", since=UNTIL - timedelta(days=1),
                                      until=UNTIL, dry_run=False))
    assert (refused.http_status, refused.code) == (404, "not_found")

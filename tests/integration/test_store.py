"""The persistence package against the real PostgreSQL: a UnitOfWork commits together or not at all, and
the transaction guard sees its transaction (so "claim, commit, call, record" stays enforced through it)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from services.core.adapters import txguard
from services.core.adapters.store.directory import Directory
from services.core.adapters.store.jobs import SyncJobs
from services.core.adapters.store.mailbox.connections import MailboxConnections
from services.core.adapters.store.uow import UnitOfWork

pytestmark = [pytest.mark.asyncio(loop_scope="session"), pytest.mark.integration]


def _ids() -> tuple[str, str]:
    suffix = uuid.uuid4().hex[:10]
    return f"store-acct-{suffix}", f"store-user-{suffix}"


async def test_a_unit_of_work_commits_its_writes_together(db):
    account_id, user_id = _ids()
    async with UnitOfWork(db) as uow:
        await uow.directory.ensure_account(account_id)
        connection_id = await uow.connections.ensure(account_id, user_id)
    assert await db.fetchval("SELECT account_id FROM mailbox_connections WHERE connection_id = $1::uuid",
                             connection_id) == account_id


async def test_a_unit_of_work_that_raises_leaves_nothing(db):
    account_id, user_id = _ids()
    with pytest.raises(RuntimeError):
        async with UnitOfWork(db) as uow:
            await uow.directory.ensure_account(account_id)
            await uow.connections.ensure(account_id, user_id)
            raise RuntimeError("rolled back")
    assert await db.fetchval("SELECT count(*) FROM accounts WHERE account_id = $1", account_id) == 0
    assert await db.fetchval("SELECT count(*) FROM mailbox_connections WHERE user_id = $1", user_id) == 0


async def test_the_transaction_guard_sees_a_unit_of_work(db):
    txguard.install()
    account_id, _ = _ids()
    async with UnitOfWork(db) as uow:
        await uow.directory.ensure_account(account_id)
        with pytest.raises(txguard.TransactionGuardViolation):
            txguard.check("Graph call inside a unit of work")
    txguard.check("after the commit")  # allowed again


async def test_scoped_repositories_find_nothing_of_another_account(db):
    account_id, user_id = _ids()
    await Directory(db).ensure_account(account_id)
    connection_id = await MailboxConnections(db).ensure(account_id, user_id)
    connections, jobs = MailboxConnections(db), SyncJobs(db)
    until = datetime.now(UTC)
    assert not await connections.poll_now(connection_id, "another-account")
    assert await connections.poll_now(connection_id, account_id)
    assert await jobs.queue_backsync(connection_id, "another-account", since=until - timedelta(days=1),
                                     until=until, dry_run=True) is None
    job_id = await jobs.queue_backsync(connection_id, None, since=until - timedelta(days=1), until=until,
                                       dry_run=True)
    assert job_id is not None
    assert await jobs.in_account(job_id, "another-account") is None
    row = await jobs.in_account(job_id, account_id)
    assert row is not None and row["kind"] == "backsync" and row["dry_run"]

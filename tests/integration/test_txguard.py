"""The test-mode guard that enforces "no network call while a database transaction is open"."""

from __future__ import annotations

import asyncio

import pytest

from services.core.adapters import txguard

pytestmark = [pytest.mark.integration]


async def test_a_network_call_inside_a_transaction_is_refused_and_elsewhere_allowed(db):
    txguard.install()
    txguard.check("outside any transaction")  # allowed
    async with db.acquire() as conn:
        async with conn.transaction():
            with pytest.raises(txguard.TransactionGuardViolation, match="inside a database transaction"):
                txguard.check("Graph GET /users/u/messages/m")

            async def other_task() -> None:
                txguard.check("another task's call")  # its own task holds no transaction

            await asyncio.create_task(other_task())
        txguard.check("after the commit")  # allowed again
        with pytest.raises(RuntimeError):
            async with conn.transaction():
                raise RuntimeError("rolled back")
        txguard.check("after a rollback")  # the count went down on the way out too

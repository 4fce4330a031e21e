"""Fixtures for the integration and end-to-end tiers: the real system, started once per run."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import asyncpg
import pytest
import pytest_asyncio

from services.core.adapters.txguard import MARKER as TXGUARD_MARKER
from tests.support.kafka_tail import Tail
from tests.support.procs import LOGS
from tests.support.stack import Stack, close_clients, open_clients, start_stack, stop_stack


@pytest.fixture(scope="session")
def stack_processes() -> Iterator[Stack]:
    stack = start_stack()
    yield stack
    codes = stop_stack(stack)
    # Every service must shut down cleanly on SIGTERM (exit 0), not be killed.
    assert all(code == 0 for code in codes.values()), f"unclean shutdown: {codes}"
    # No service made a network call inside a database transaction (services.core.adapters.txguard), in any stack.
    violations = [f"{log.name}: {line[:300]}" for log in sorted(LOGS.glob("*.log"))
                  for line in log.read_text(errors="replace").splitlines() if TXGUARD_MARKER in line]
    assert violations == [], "network calls inside a database transaction:\n" + "\n".join(violations)


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def stack(stack_processes: Stack) -> AsyncIterator[Stack]:
    yield await open_clients(stack_processes)
    await close_clients(stack_processes)


@pytest_asyncio.fixture(loop_scope="session")
async def db(stack: Stack) -> asyncpg.Pool:
    assert stack.pool is not None
    return stack.pool


@pytest_asyncio.fixture(loop_scope="session")
async def engagements_tail(stack: Stack) -> AsyncIterator[Tail]:
    tail = await Tail(stack.env["MAILSYNC_KAFKA_BOOTSTRAP"], "mailsync.engagements.v1").start()
    yield tail
    await tail.stop()


@pytest_asyncio.fixture(loop_scope="session")
async def notifications_tail(stack: Stack) -> AsyncIterator[Tail]:
    tail = await Tail(stack.env["MAILSYNC_KAFKA_BOOTSTRAP"], "mailsync.notifications.v1").start()
    yield tail
    await tail.stop()

"""Test-mode guard for the rule "no network call while a database transaction is open".

With `MAILSYNC_TRANSACTION_GUARD=true` (the test suite sets it), every asyncpg transaction is counted per
asyncio task, and a Graph or identity request started by a task that has one open is refused: a
`TransactionGuardViolation` is raised and a CRITICAL line logged, which the suite looks for in every
service's log. Off in production: the counting costs a dict update per transaction.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from asyncpg.transaction import Transaction

log = logging.getLogger(__name__)
MARKER = "network call inside a database transaction"

_open: dict[int, int] = {}  # id(task) -> transactions it has open
_installed = False


class TransactionGuardViolation(AssertionError):
    """A network call started while the same task held a database transaction."""


def _task_key() -> int | None:
    try:
        task = asyncio.current_task()
    except RuntimeError:
        return None
    return id(task) if task is not None else None


def install() -> None:
    global _installed
    if _installed:
        return
    enter, leave = Transaction.__aenter__, Transaction.__aexit__

    async def guarded_enter(self: Transaction) -> Any:
        result = await enter(self)
        key = _task_key()
        if key is not None:
            _open[key] = _open.get(key, 0) + 1
        return result

    async def guarded_exit(self: Transaction, *exc: Any) -> Any:
        key = _task_key()
        if key is not None and _open.get(key):
            _open[key] -= 1
            if not _open[key]:
                del _open[key]
        return await leave(self, *exc)

    Transaction.__aenter__ = guarded_enter
    Transaction.__aexit__ = guarded_exit
    _installed = True
    log.info("transaction guard on: network calls inside a database transaction are refused")


def check(call: str) -> None:
    """Called as a Graph or identity request starts; a no-op unless installed."""
    if not _installed:
        return
    key = _task_key()
    if key is not None and _open.get(key):
        log.critical(MARKER, extra={"call": call})
        raise TransactionGuardViolation(f"{MARKER}: {call}")

"""What every repository shares: the database handle it runs on and the account filter of scoped reads."""

from __future__ import annotations

from typing import TypeAlias

import asyncpg

Db: TypeAlias = asyncpg.Pool | asyncpg.Connection


def in_scope(column: str, n: int) -> str:
    """The filter every account-scoped query ends with ($n: None for the operator): a record of another
    account is simply not found, exactly as an id that never existed."""
    return f"(${n}::text IS NULL OR {column} = ${n})"


class Repository:
    """Statements over one aggregate; `db` is a pool (one statement, autocommit) or a connection (the caller's
    transaction, see UnitOfWork)."""

    def __init__(self, db: Db) -> None:
        self._db = db

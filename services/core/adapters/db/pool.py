"""The asyncpg pool, created inside the running loop (never at import)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import asyncpg

from services.core.adapters.config import Settings


async def _init_connection(conn: asyncpg.Connection) -> None:
    for kind in ("json", "jsonb"):
        await conn.set_type_codec(kind, encoder=json.dumps, decoder=json.loads, schema="pg_catalog")


async def create_pool(settings: Settings, *, min_size: int = 1, max_size: int = 10) -> asyncpg.Pool:
    pool: asyncpg.Pool = await asyncpg.create_pool(
        settings.database_url,
        min_size=min_size,
        max_size=max_size,
        init=_init_connection,
        command_timeout=30,
    )
    return pool


async def database_reachable(pool: asyncpg.Pool, timeout_s: float = 2.0) -> bool:
    try:
        async with asyncio.timeout(timeout_s):
            value: Any = await pool.fetchval("SELECT 1")
        return bool(value == 1)
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError):
        return False

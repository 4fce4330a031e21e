"""`mailsync status`: every connection's health in one table."""

from __future__ import annotations

import asyncpg

from services.core.adapters.config import Settings
from services.core.adapters.store.mailbox.connections import MailboxConnections

COLUMNS = ("connection_id", "user_id", "mailbox_address", "status", "error_code", "last_synced_at",
           "subscription_expires")


async def print_status(settings: Settings) -> int:
    conn = await asyncpg.connect(settings.database_url)
    try:
        rows = await MailboxConnections(conn).health_table()
    finally:
        await conn.close()
    table = [COLUMNS] + [tuple(str(r[c]) for c in COLUMNS) for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(COLUMNS))]
    for row in table:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    print(f"{len(rows)} connection(s)")
    return 0

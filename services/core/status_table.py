"""`mailsync status`: every connection's health in one table."""

from __future__ import annotations

import asyncpg

from services.core.config import Settings

COLUMNS = ("connection_id", "user_id", "mailbox_address", "status", "error_code", "last_synced_at",
           "subscription_expires")


async def print_status(settings: Settings) -> int:
    conn = await asyncpg.connect(settings.database_url)
    try:
        rows = await conn.fetch(
            """SELECT c.connection_id::text, c.user_id, coalesce(c.mailbox_address, '') AS mailbox_address,
                      c.status, coalesce(c.error_code, '') AS error_code,
                      coalesce(to_char(c.last_synced_at, 'YYYY-MM-DD HH24:MI:SS'), 'never') AS last_synced_at,
                      coalesce((SELECT to_char(min(s.expires_at), 'YYYY-MM-DD HH24:MI')
                                  FROM subscriptions s WHERE s.connection_id = c.connection_id), 'none')
                        AS subscription_expires
                 FROM mailbox_connections c ORDER BY c.account_id, c.user_id""")
    finally:
        await conn.close()
    table = [COLUMNS] + [tuple(str(r[c]) for c in COLUMNS) for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(COLUMNS))]
    for row in table:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    print(f"{len(rows)} connection(s)")
    return 0

"""`mailsync rotate-keys`: re-encrypt every stored token with the primary key of MAILSYNC_TOKEN_KEYS.

Add the new key first in MAILSYNC_TOKEN_KEYS (keeping the old one after it), roll the services,
run this, then drop the old key.
"""

from __future__ import annotations

import asyncpg

from services.core.crypto import TokenBox


async def rotate_keys(conn: asyncpg.Connection, box: TokenBox, *, batch: int = 500) -> int:
    rotated = 0
    while True:
        async with conn.transaction():
            rows = await conn.fetch(
                """SELECT connection_id, access_token_enc, refresh_token_enc FROM mailbox_connections
                    WHERE (access_token_enc IS NOT NULL AND NOT starts_with(encode(access_token_enc, 'escape'), $1))
                       OR (refresh_token_enc IS NOT NULL AND NOT starts_with(encode(refresh_token_enc, 'escape'), $1))
                    LIMIT $2 FOR UPDATE SKIP LOCKED""", f"v1.{box.primary_key_id}.", batch)
            if not rows:
                return rotated
            for row in rows:
                cid = str(row["connection_id"])
                values = [box.encrypt(box.decrypt(blob, bound_to=cid), bound_to=cid) if blob is not None else None
                          for blob in (row["access_token_enc"], row["refresh_token_enc"])]
                await conn.execute("UPDATE mailbox_connections SET access_token_enc = $2, refresh_token_enc = $3"
                                   " WHERE connection_id = $1", row["connection_id"], *values)
            rotated += len(rows)

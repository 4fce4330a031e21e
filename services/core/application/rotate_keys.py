"""`mailsync rotate-keys`: re-encrypt every stored token with the primary key of MAILSYNC_TOKEN_KEYS.

Add the new key first in MAILSYNC_TOKEN_KEYS (keeping the old one after it), roll the services,
run this, then drop the old key.
"""

from __future__ import annotations

import asyncpg

from services.core.adapters.crypto import TokenBox
from services.core.adapters.store.mailbox.tokens import MailboxTokens, SealedTokens


def _resealed(box: TokenBox, tokens: SealedTokens) -> SealedTokens:
    cid = tokens.connection_id

    def reseal(blob: bytes | None) -> bytes | None:
        return box.encrypt(box.decrypt(blob, bound_to=cid), bound_to=cid) if blob is not None else None

    return SealedTokens(cid, reseal(tokens.access_token_enc), reseal(tokens.refresh_token_enc))


async def rotate_keys(conn: asyncpg.Connection, box: TokenBox, *, batch: int = 500) -> int:
    rotated = 0
    store = MailboxTokens(conn)
    while True:
        async with conn.transaction():
            found = await store.lock_not_sealed_with(f"v1.{box.primary_key_id}.", batch)
            if not found:
                return rotated
            for tokens in found:
                await store.reseal(_resealed(box, tokens))
            rotated += len(found)

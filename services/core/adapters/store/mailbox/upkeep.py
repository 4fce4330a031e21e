"""The renewer's upkeep writes on mailbox_connections: the subscribe back-off, tokens a refresh stored after a
disconnect, the per-status gauge. They belong with MailboxConnections (connections.py) and move there when
that module's statements are gathered; kept apart meanwhile so each module has one writer at a time."""

from __future__ import annotations

from datetime import timedelta

from services.core.adapters.store.base import Repository


class ConnectionUpkeep(Repository):
    async def subscribe_failed(self, connection_id: str) -> None:
        """The first failure is retried on the next tick, later ones after 30 s, 90 s, ... at most an hour."""
        await self._db.execute(
            """UPDATE mailbox_connections SET subscribe_failures = subscribe_failures + 1,
                      subscribe_retry_at = now() + least(
                          interval '30 seconds' * (power(2, least(subscribe_failures, 10)) - 1), interval '1 hour')
                WHERE connection_id = $1::uuid""", connection_id)

    async def subscribed(self, connection_id: str) -> None:
        """A subscription was created: the back-off starts over, and a catch-up poll runs now."""
        await self._db.execute("UPDATE mailbox_connections SET next_poll_at = now(), subscribe_failures = 0,"
                               " subscribe_retry_at = NULL WHERE connection_id = $1::uuid", connection_id)

    async def wipe_stray_tokens(self, grace: timedelta) -> list[str]:
        """Tokens on disconnected rows not changed for `grace`; returns those connections."""
        rows = await self._db.fetch(
            """UPDATE mailbox_connections SET access_token_enc = NULL, refresh_token_enc = NULL,
                      access_expires_at = NULL
                WHERE status = 'disconnected' AND (access_token_enc IS NOT NULL OR refresh_token_enc IS NOT NULL)
                  AND updated_at < now() - $1::interval
            RETURNING connection_id""", grace)
        return [str(r["connection_id"]) for r in rows]

    async def count_by_status(self) -> dict[str, int]:
        rows = await self._db.fetch("SELECT status, count(*) AS n FROM mailbox_connections GROUP BY status")
        return {str(r["status"]): int(r["n"]) for r in rows}

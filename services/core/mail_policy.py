"""What an account and a mailbox owner ask of their mail: the capture tier, whether automated mail is
excluded, and the owner's own never-log list. One indexed read per message (accounts and users rows)."""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg

from services.core import capture
from services.core.capture import Capture


@dataclass(frozen=True)
class MailPolicy:
    capture: Capture = capture.DEFAULT
    exclude_automated: bool = True
    never_log: frozenset[str] = frozenset()


async def load_policy(db: asyncpg.Pool | asyncpg.Connection, account_id: str, user_id: str | None) -> MailPolicy:
    """The account's settings (the database defaults when the host never sent account.upserted) and the
    user's never_log entries (canonical, as the directory consumer stored them)."""
    row = await db.fetchrow(
        """SELECT a.capture, a.exclude_automated,
                  (SELECT u.never_log FROM users u WHERE u.user_id = $2 AND u.account_id = $1) AS never_log
             FROM accounts a WHERE a.account_id = $1""", account_id, user_id)
    if row is None:
        return MailPolicy()
    return MailPolicy(capture=capture.parse(row["capture"]), exclude_automated=bool(row["exclude_automated"]),
                      never_log=frozenset(row["never_log"] or ()))

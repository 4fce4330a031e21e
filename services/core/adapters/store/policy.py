"""What an account asks of its mail (accounts' capture tier and exclude_automated) and what a mailbox owner
asks (users.never_log): reads only; the directory consumer writes them (services/core/adapters/store/directory.py)."""

from __future__ import annotations

from typing import NamedTuple

from services.core.adapters.store.base import Repository
from services.core.domain import capture
from services.core.domain.capture import Capture


class MailSettings(NamedTuple):
    capture: Capture
    exclude_automated: bool
    never_log: list[str]  # the user's entries, canonical; empty when the user is unknown


class AccountPolicies(Repository):
    async def mail_settings(self, account_id: str, user_id: str | None) -> MailSettings | None:
        """The account's settings with the user's never_log, in one indexed read; None for an account the host
        never named."""
        row = await self._db.fetchrow(
            """SELECT a.capture, a.exclude_automated,
                      (SELECT u.never_log FROM users u WHERE u.user_id = $2 AND u.account_id = $1) AS never_log
                 FROM accounts a WHERE a.account_id = $1""", account_id, user_id)
        if row is None:
            return None
        return MailSettings(capture.parse(row["capture"]), bool(row["exclude_automated"]), list(row["never_log"] or ()))

    async def capture_of(self, account_id: str) -> Capture | None:
        """The account's capture tier, None for an unknown account."""
        value = await self._db.fetchval("SELECT capture FROM accounts WHERE account_id = $1", account_id)
        return capture.parse(value) if value is not None else None

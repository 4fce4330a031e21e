"""Push coverage: is Graph's push delivery bringing the mail, or is the hourly poll quietly covering for it?

The poll publishes only messages no notification announced (services/renewer/delta.py), so a decision made
from the poll's record (`source = 'delta'`) for mail that arrived while the mailbox was connected is a
message push missed. Counted per connection over the last 24 hours; above a threshold the settings page,
/admin/email, the `mailsync_push_degraded_connections` metric and the connection's status reason say so.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from services.core.adapters.store.engagement.activity import Activity

WINDOW = timedelta(hours=24)
MIN_POLL_ONLY = 3  # fewer is noise: a notification racing the poll, a message moved during it
MIN_SHARE = 0.2  # of the mail that arrived, the share only the poll found
DEGRADED_CODE = "push_degraded"
DEGRADED_REASON = ("Microsoft 365 is not delivering some change notifications for this mailbox; the hourly "
                   "poll is covering, so mail appears up to an hour late.")


@dataclass(frozen=True)
class Coverage:
    announced: int  # found by a notification (webhook)
    poll_only: int  # found only by the poll

    @property
    def degraded(self) -> bool:
        total = self.announced + self.poll_only
        return self.poll_only >= MIN_POLL_ONLY and self.poll_only >= MIN_SHARE * total

    @property
    def words(self) -> str:
        total = self.announced + self.poll_only
        return (f"in the last 24 hours the hourly poll found {self.poll_only} of {total} new emails that no "
                "notification announced. Push delivery is degraded and the hourly poll is covering: mail "
                "still arrives, up to an hour late.")


async def load_coverage(pool: Any, connection_id: str) -> Coverage:
    row = await Activity(pool).push_coverage(WINDOW, connection_id)
    return Coverage(row["announced"], row["poll_only"]) if row else Coverage(0, 0)


async def load_account_coverage(pool: Any, account_id: str) -> dict[str, Coverage]:
    rows = await Activity(pool).account_push_coverage(WINDOW, account_id)
    return {str(r["connection_id"]): Coverage(r["announced"], r["poll_only"]) for r in rows}

"""What an account and a mailbox owner ask of their mail: the capture tier, whether automated mail is
excluded, and the owner's own never-log list. One indexed read per message (accounts and users rows)."""

from __future__ import annotations

from dataclasses import dataclass

from services.core.adapters.store.base import Db
from services.core.adapters.store.policy import AccountPolicies
from services.core.domain import capture
from services.core.domain.capture import Capture


@dataclass(frozen=True)
class MailPolicy:
    capture: Capture = capture.DEFAULT
    exclude_automated: bool = True
    never_log: frozenset[str] = frozenset()


async def load_policy(db: Db, account_id: str, user_id: str | None) -> MailPolicy:
    """The account's settings (the database defaults when the host never sent account.upserted) and the
    user's never_log entries (canonical, as the directory consumer stored them)."""
    settings = await AccountPolicies(db).mail_settings(account_id, user_id)
    if settings is None:
        return MailPolicy()
    return MailPolicy(capture=settings.capture, exclude_automated=settings.exclude_automated,
                      never_log=frozenset(settings.never_log))

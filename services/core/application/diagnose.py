"""Why is (or isn't) this email on the timeline? Answers from the stored decision, or, for mail the
mailbox never reported, from the connection's state at the time plus what matching would decide."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from email.parser import HeaderParser
from email.utils import getaddresses, parsedate_to_datetime
from typing import Any

import asyncpg

from services.core.adapters.store.directory import Directory
from services.core.adapters.store.engagement.decisions import MatchDecisions
from services.core.adapters.store.mailbox.owners import MailboxOwners
from services.core.application.matching import ToDecide, decide_and_store, owner_of
from services.core.domain import automated, reasons
from services.core.domain.model import EmailAddress, MailMessage

MAX_HEADERS = 256 * 1024
MAX_COMMENT_DEPTH = 32


class DiagnoseError(ValueError):
    """Bad input: answered 400 / a clear CLI line."""


@dataclass(frozen=True)
class HeaderFacts:
    internet_message_id: str
    subject: str
    sent_at: datetime | None
    from_: EmailAddress | None
    sender: EmailAddress | None
    to: tuple[EmailAddress, ...]
    cc: tuple[EmailAddress, ...]
    reply_to: tuple[EmailAddress, ...]
    automated_by: str | None = None  # the header that marks bulk or machine mail (services.core.domain.automated)


def _addresses(values: list[str]) -> tuple[EmailAddress, ...]:
    return tuple(EmailAddress(address=a, name=n) for n, a in getaddresses(values) if a)


def _comment_depth(raw: str) -> int:
    """The deepest `(` nesting within one header (folded lines included): RFC 5322 comments nest, and the
    standard parser recurses once per level."""
    deepest = 0
    for header in re.split(r"\r?\n(?![ \t])", raw):
        depth = 0
        for char in header:
            if char == "(":
                depth += 1
                deepest = max(deepest, depth)
            elif char == ")" and depth:
                depth -= 1
    return deepest


def parse_headers(raw: str) -> HeaderFacts:
    """Raw Internet headers as pasted from a mail client (standard library parser), bounded before parsing."""
    if len(raw) > MAX_HEADERS:
        raise DiagnoseError("headers are larger than 256 KiB")
    if _comment_depth(raw) > MAX_COMMENT_DEPTH:
        raise DiagnoseError(f"the headers nest comments deeper than {MAX_COMMENT_DEPTH} levels; "
                            "paste the message's real Internet headers")
    try:
        return _parse(raw)
    except DiagnoseError:
        raise
    except Exception as exc:  # the standard parser on hostile text: a clear 400, never a 500
        raise DiagnoseError(f"the headers could not be read ({type(exc).__name__})") from None


def _parse(raw: str) -> HeaderFacts:
    headers = HeaderParser().parsestr(raw.lstrip(), headersonly=True)
    message_id = (headers.get("Message-ID") or headers.get("Message-Id") or "").strip()
    if not message_id:
        raise DiagnoseError("the headers have no Message-ID line; paste the message's full Internet headers")
    sent_at = None
    if headers.get("Date"):
        try:
            sent_at = parsedate_to_datetime(str(headers["Date"]))
            if sent_at.tzinfo is None:
                sent_at = sent_at.replace(tzinfo=UTC)
        except (TypeError, ValueError):
            sent_at = None
    froms = _addresses(headers.get_all("From", []))
    senders = _addresses(headers.get_all("Sender", []))
    return HeaderFacts(
        internet_message_id=message_id, subject=str(headers.get("Subject", "")), sent_at=sent_at,
        from_=froms[0] if froms else None, sender=senders[0] if senders else None,
        to=_addresses(headers.get_all("To", [])), cc=_addresses(headers.get_all("Cc", [])),
        reply_to=_addresses(headers.get_all("Reply-To", [])),
        automated_by=_automation([(str(k), str(v)) for k, v in headers.items()]))


def _automation(pairs: list[tuple[str, str]]) -> str | None:
    found = automated.classify(pairs)
    return found.describe() if found is not None else None


def _reason(code: str, detail: str) -> dict[str, str]:
    return {"code": code, "detail": detail}


async def _status_at(pool: asyncpg.Pool, connection_id: Any, when: datetime | None) -> str | None:
    if when is None:
        return None
    return await MailboxOwners(pool).status_at(str(connection_id), when)


async def diagnose(pool: asyncpg.Pool, user_id: str, internet_message_id: str | None = None,
                   headers: HeaderFacts | None = None) -> dict[str, Any]:
    imid = internet_message_id or (headers.internet_message_id if headers else "")
    if not imid:
        raise DiagnoseError("give an internet_message_id or the message's headers")
    account_id = await Directory(pool).account_of(user_id, None)
    if account_id is None:
        raise LookupError(f"no user {user_id!r}")
    row = await MatchDecisions(pool).of_message(user_id, account_id, imid)
    if row is not None:
        return {"decision": row["decision"], "reasons": row["reasons"], "folder": row["folder"],
                "engagement_id": str(row["engagement_id"]) if row["engagement_id"] else None,
                "decided_at": row["decided_at"].isoformat(), "source": row["source"]}
    connection = await MailboxOwners(pool).of_user(user_id)
    found: list[dict[str, str]] = [{"code": reasons.ReasonCode.NOT_SEEN.value,
                                     "detail": reasons.not_seen(imid).detail}]
    if connection is None:
        found.append(_reason("never_connected", "This user has never connected a mailbox to mailsync."))
    else:
        at_time = await _status_at(pool, connection["connection_id"], headers.sent_at if headers else None)
        if at_time and at_time != "connected":
            found.append(_reason("not_connected_at_the_time",
                                 f"When this message was sent the mailbox connection was {at_time}."))
        found.append(_reason("connection_status", f"The mailbox connection is {connection['status']} now"
                             + (f": {connection['reason']}" if connection["reason"] else ".")
                             + (f" Last successful sync: {connection['last_synced_at'].isoformat()}."
                                if connection["last_synced_at"] else " It has not synced yet.")))
    if headers is not None:
        message = MailMessage(message_id="", internet_message_id=imid, conversation_id="", subject=headers.subject,
                              folder="inbox", is_draft=False, received_at=headers.sent_at, sent_at=headers.sent_at,
                              from_=headers.from_, sender=headers.sender, to=headers.to, cc=headers.cc,
                              reply_to=headers.reply_to, automated_by=headers.automated_by)
        owner, policy = await owner_of(pool, account_id, user_id,
                                       tuple(connection["mailbox_addresses"]) if connection else ())
        connection_id = str(connection["connection_id"]) if connection else ""
        # A dry run: the decision the matcher would store, nothing written.
        decided = await decide_and_store(pool, [ToDecide(owner, policy, connection_id, message, "webhook")],
                                         dry_run=True)
        would = decided.copies[0].result
        found.append(_reason("would_be", f"If mailsync sees this message it would be {would.decision.value}: "
                             + "; ".join(r.detail for r in would.reasons[:2])))
    return {"decision": "not_seen", "reasons": found, "folder": None, "engagement_id": None}

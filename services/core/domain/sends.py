"""Sending mail from the application: what a send request must hold, and what the worker does next.

Pure logic only (no I/O), so the rules that keep a send from going out twice are tested on their own.
The worker (services/renewer/sends.py) and the API (services/subscriber/send_api.py) carry it out;
docs/design.md#sends explains the design.

Why a send can never go out twice: mailsync chooses the message's `internetMessageId` (and tags it with an
extended property holding the send id) before the first call. Every call that may have reached Graph is
marked "in doubt" before it starts; a send still in doubt (the worker crashed, the answer was lost, Graph
answered 5xx) is looked up in the mailbox by that `internetMessageId` before anything is sent again.
Graph's `sendMail` answers 202 before Exchange has saved the Sent Items copy, so a lookup that finds nothing
right after the call proves nothing: the send is sent again only once `SETTLE` has passed since the call
that is in doubt began.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from services.core.domain.addresses import normalize_address

MAX_RECIPIENTS = 500  # Exchange Online: at most 500 recipients (To + Cc + Bcc) per message
MESSAGES_PER_MINUTE = 30  # Exchange Online's message rate limit per mailbox
RECIPIENTS_PER_DAY = 10_000  # Exchange Online's recipient rate limit per mailbox (rolling 24 hours)
MAX_BODY_BYTES = 512 * 1024  # the API's own bound: a request stays under the subscriber's 1 MB body limit
MAX_SUBJECT_CHARS = 998  # RFC 5322's line length: a subject longer than one header line is not a subject
MAX_KEY_CHARS = 200
BODY_TYPES = ("text", "html")

LEASE = timedelta(minutes=2)  # longer than any one Graph call (20 s timeout) with a wide margin
# How long a 202'd sendMail may take to show in Sent Items before we believe it absent. Long on purpose: the
# contract is "never twice", an in-doubt send is rare (a lost answer, a crash), and it is looked up every
# LOOK_AGAIN meanwhile, so a copy that shows up ends the wait at once.
SETTLE = timedelta(minutes=15)
LOOK_AGAIN = timedelta(minutes=1)
MAX_QUEUED = timedelta(hours=25)  # past this a send that could not go (limits, outages) fails with its last reason
UNCERTAIN_RETRY = timedelta(seconds=5)  # an in-doubt send is looked at again this soon (the lookup is cheap)
SEND_ID_PROPERTY = "String {4d2f7e0a-6b1c-4f3e-9a57-1c2b3d4e5f60} Name mailsyncSendId"

_KEY = re.compile(r"^[\x21-\x7e]{1,200}$")  # printable ASCII, no spaces: what an Idempotency-Key usually is


class SendRequestError(ValueError):
    """A send request that cannot be used: answered 400 with this message."""


@dataclass(frozen=True)
class SendRequest:
    to: tuple[str, ...]
    cc: tuple[str, ...]
    subject: str
    body: str
    body_type: str
    idempotency_key: str

    @property
    def recipient_count(self) -> int:
        return len(self.to) + len(self.cc)


def _addresses(body: dict[str, Any], key: str) -> tuple[str, ...]:
    raw = body.get(key, [])
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise SendRequestError(f"{key} must be a list of email addresses")
    out: list[str] = []
    for i, item in enumerate(raw):
        if not isinstance(item, str):
            raise SendRequestError(f"{key}[{i}] must be a string")
        # One plain address per entry: "Name <a@x>" or a list in one string would hide recipients.
        normalized = normalize_address(item) if "<" not in item and "," not in item else None
        if normalized is None:
            raise SendRequestError(f"{key}[{i}] is not a valid email address: {item[:120]!r}")
        out.append(normalized)
    return tuple(out)


def parse_send_request(body: Any) -> SendRequest:
    """The API's body as a SendRequest, or SendRequestError naming the first problem (the bad field)."""
    if not isinstance(body, dict):
        raise SendRequestError("the body must be a JSON object")
    key = body.get("idempotency_key")
    if not isinstance(key, str) or not _KEY.match(key):
        raise SendRequestError(f"idempotency_key is required: 1-{MAX_KEY_CHARS} printable ASCII characters, "
                               "no spaces")
    to, cc = _addresses(body, "to"), _addresses(body, "cc")
    if "bcc" in body:
        raise SendRequestError("bcc is not supported: recipients must be visible on the timeline")
    count = len(to) + len(cc)
    if count == 0:
        raise SendRequestError("at least one recipient is required in to or cc")
    if count > MAX_RECIPIENTS:
        raise SendRequestError(f"{count} recipients: Exchange Online accepts at most {MAX_RECIPIENTS} per message")
    subject = body.get("subject", "")
    if not isinstance(subject, str):
        raise SendRequestError("subject must be a string")
    if len(subject) > MAX_SUBJECT_CHARS or "\n" in subject or "\r" in subject:
        raise SendRequestError(f"subject must be one line of at most {MAX_SUBJECT_CHARS} characters")
    text = body.get("body", "")
    if not isinstance(text, str):
        raise SendRequestError("body must be a string")
    if len(text.encode("utf-8", "surrogatepass")) > MAX_BODY_BYTES:
        raise SendRequestError(f"body is larger than {MAX_BODY_BYTES // 1024} KB")
    body_type = body.get("body_type", "text")
    if body_type not in BODY_TYPES:
        raise SendRequestError("body_type must be \"text\" or \"html\"")
    return SendRequest(to=to, cc=cc, subject=subject, body=text, body_type=str(body_type), idempotency_key=key)


def internet_message_id_for(send_id: str, sender_address: str) -> str:
    """The Message-ID mailsync gives the message before sending it: unique, derived from the send id (so a
    lookup needs nothing else), in the sender's domain as RFC 5322 suggests."""
    domain = sender_address.rpartition("@")[2] or "mailsync.invalid"
    return f"<{uuid.UUID(send_id).hex}.mailsync@{domain}>"


def graph_message(*, subject: str, body: str, body_type: str, to: list[str], cc: list[str],
                  internet_message_id: str, send_id: str) -> dict[str, Any]:
    """The `message` of a `sendMail` request (also a draft's body)."""
    return {
        "subject": subject,
        "body": {"contentType": "HTML" if body_type == "html" else "Text", "content": body},
        "toRecipients": [{"emailAddress": {"address": a}} for a in to],
        "ccRecipients": [{"emailAddress": {"address": a}} for a in cc],
        "internetMessageId": internet_message_id,
        "singleValueExtendedProperties": [{"id": SEND_ID_PROPERTY, "value": send_id}],
    }


# --- the worker's decisions ------------------------------------------------------------------------


class Step(StrEnum):
    LOOK_UP = "look_up"  # a call may have reached Graph: find the message before anything else
    SEND = "send"
    MARK_SENT = "mark_sent"
    WAIT = "wait"  # come back at `until` (still queued; `reason` says why)
    FAIL = "fail"


@dataclass(frozen=True)
class Decision:
    step: Step
    until: datetime | None = None
    reason: str | None = None


@dataclass(frozen=True)
class Claimed:
    """What the worker knows about a send it holds the lease of."""

    in_doubt: bool  # a call to Graph began and its answer was never recorded (or was a 5xx / lost)
    attempt_started_at: datetime | None
    created_at: datetime


def before_call(claimed: Claimed, now: datetime) -> Decision:
    """First look: a send in doubt is looked up, whatever else holds."""
    if claimed.in_doubt:
        return Decision(Step.LOOK_UP)
    if now - claimed.created_at > MAX_QUEUED:
        return Decision(Step.FAIL, reason=f"not sent within {int(MAX_QUEUED.total_seconds() // 3600)} hours")
    return Decision(Step.SEND)


def after_lookup(claimed: Claimed, found: bool, now: datetime) -> Decision:
    """The lookup's answer for a send in doubt: found means Graph took it (never send again); absent means
    not sent only once Exchange has had SETTLE to save the Sent Items copy."""
    if found:
        return Decision(Step.MARK_SENT)
    started = claimed.attempt_started_at or claimed.created_at
    if now < started + SETTLE:
        return Decision(Step.WAIT, until=min(started + SETTLE, now + LOOK_AGAIN),
                        reason="checking whether Microsoft 365 sent the message before trying again")
    if now - claimed.created_at > MAX_QUEUED:
        return Decision(Step.FAIL, reason=f"not sent within {int(MAX_QUEUED.total_seconds() // 3600)} hours")
    return Decision(Step.SEND)


@dataclass(frozen=True)
class RecentSending:
    """The mailbox's sending through mailsync: times of messages sent in the last minute and recipients
    (with times) in the last 24 hours, oldest first."""

    last_minute: tuple[datetime, ...]
    last_day: tuple[tuple[datetime, int], ...]


def sending_limit(recent: RecentSending, recipients: int, now: datetime) -> Decision | None:
    """Exchange's sending limits checked before calling: a WAIT until the mailbox may send this message
    again, or None when it may send now. Graph's own 429 covers what others sent from the same mailbox."""
    minute = [t for t in recent.last_minute if t > now - timedelta(minutes=1)]
    if len(minute) >= MESSAGES_PER_MINUTE:
        until = minute[len(minute) - MESSAGES_PER_MINUTE] + timedelta(minutes=1)
        return Decision(Step.WAIT, until=until,
                        reason=f"Exchange Online sends at most {MESSAGES_PER_MINUTE} messages a minute per "
                        f"mailbox; this one goes at {until.isoformat(timespec='seconds')}")
    day = [(t, n) for t, n in recent.last_day if t > now - timedelta(days=1)]
    total = sum(n for _, n in day)
    if total + recipients > RECIPIENTS_PER_DAY:
        # The earliest moment enough recipients have left the 24-hour window.
        excess, until = total + recipients - RECIPIENTS_PER_DAY, now
        for when, n in day:
            excess -= n
            until = when + timedelta(days=1)
            if excess <= 0:
                break
        return Decision(Step.WAIT, until=until,
                        reason=f"Exchange Online sends to at most {RECIPIENTS_PER_DAY} recipients a day per "
                        f"mailbox; this one goes at {until.isoformat(timespec='seconds')}")
    return None


class Outcome(StrEnum):
    SENT = "sent"
    THROTTLED = "throttled"  # Graph refused for now (429): it did not take the message
    UNCERTAIN = "uncertain"  # no answer, or a 5xx: Graph may have taken it
    FAILED = "failed"  # Graph refused the message for good


@dataclass(frozen=True)
class CallResult:
    outcome: Outcome
    retry_after_s: float | None = None
    reason: str | None = None


def classify_send_answer(status: int | None, error_code: str, retry_after_s: float | None) -> CallResult:
    """`status` None: no answer (network error, timeout, a crash). 401 is handled before this (token refresh)."""
    if status is not None and 200 <= status < 300:
        return CallResult(Outcome.SENT)
    if status is None or status >= 500:
        return CallResult(Outcome.UNCERTAIN, reason="Microsoft 365 did not confirm the send "
                          f"({error_code or 'no answer'}); checking the mailbox before trying again")
    if status == 429:
        wait = retry_after_s if retry_after_s is not None else 60.0
        return CallResult(Outcome.THROTTLED, retry_after_s=wait,
                          reason=f"Microsoft 365 refused for now ({error_code or 'throttled'}): the mailbox's "
                          "sending limit; retrying later")
    return CallResult(Outcome.FAILED, reason=f"Microsoft 365 refused the message ({error_code or f'http_{status}'})")

"""One error tree for Graph and the identity platform, and the pure classification behind it.

Decisions come from HTTP status, `error` and `error_codes`, never from description text
(GRAPH-FACTS.md). The only exception is the authorize redirect, which carries no `error_codes`:
there the AADSTS number at the start of `error_description` is the code.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any


class Severity(StrEnum):
    TRANSIENT = "transient"  # retry with back-off; never a status change
    RECONNECT = "reconnect_required"  # the user must sign in again
    CONSENT = "consent_required"  # an administrator must approve the app
    PERMANENT = "permanent"  # a bug or bad request: do not retry


RECONNECT_CODES = frozenset({50173, 70008, 700082, 50076, 50079, 50078, 70043, 700084, 50132, 50133})
CONSENT_CODES = frozenset({65001, 65004, 90094, 90095})

_REASONS = {
    50173: "Your Microsoft 365 password was reset or your sessions were revoked.",
    70008: "Your Microsoft 365 sign-in expired after a long period without use.",
    700082: "Your Microsoft 365 sign-in expired after 90 days without use.",
    700084: "Your Microsoft 365 sign-in expired.",
    50132: "Your Microsoft 365 session was revoked.",
    50133: "Your Microsoft 365 session was revoked after a password change.",
    50076: "Your organisation now requires multi-factor authentication.",
    50079: "Your organisation now requires you to register for multi-factor authentication.",
    50078: "Your multi-factor authentication has expired.",
    70043: "Your organisation's sign-in frequency policy requires you to sign in again.",
    65001: "An administrator of your organisation must approve mailsync before it can read mail.",
    65004: "Access to your mailbox was declined on the consent screen.",
    90094: "An administrator of your organisation must grant consent to mailsync.",
    90095: "An administrator of your organisation must grant consent to mailsync.",
}


@dataclass(frozen=True)
class Classified:
    severity: Severity
    error_code: str  # e.g. "AADSTS50173" or "http_503" or "InvalidAuthenticationToken"
    reason: str  # plain words for the user


class GraphError(Exception):
    """Base of every Graph/identity failure; `classified` says what to do about it."""

    def __init__(self, classified: Classified, status: int | None = None, retry_after: float | None = None):
        super().__init__(f"{classified.severity.value}: {classified.error_code}")
        self.classified = classified
        self.status = status
        self.retry_after = retry_after

    @property
    def transient(self) -> bool:
        return self.classified.severity is Severity.TRANSIENT


class NotFound(GraphError):
    """404: the message, folder or subscription is gone."""


class DeltaExpired(GraphError):
    """410 Gone or `syncStateNotFound`: the stored delta state is gone; restart the folder."""

    def __init__(self, classified: Classified, status: int | None, location: str | None) -> None:
        super().__init__(classified, status)
        self.location = location


def is_sync_state_lost(status: int, code: str) -> bool:
    return status == 410 or code.lower() in ("syncstatenotfound", "syncstateinvalid", "resyncrequired")


class AccessTokenRejected(GraphError):
    """401 from Graph: refresh the token once, then the identity platform decides."""


def _codes(body: Mapping[str, Any]) -> list[int]:
    raw = body.get("error_codes")
    if isinstance(raw, list):
        return [c for c in raw if isinstance(c, int)]
    return []


_AADSTS = re.compile(r"^\s*AADSTS(\d+)")


def classify_identity_error(status: int | None, body: Mapping[str, Any] | None) -> Classified:
    """Token endpoint failures: `status` None means the network failed before an answer."""
    if status is None:
        return Classified(Severity.TRANSIENT, "network_error", "Microsoft 365 could not be reached.")
    if status == 429 or status >= 500:
        return Classified(Severity.TRANSIENT, f"http_{status}", "Microsoft 365 is temporarily unavailable.")
    body = body or {}
    codes = _codes(body)
    error = str(body.get("error", ""))
    for code in codes:
        if code in CONSENT_CODES:
            return Classified(Severity.CONSENT, f"AADSTS{code}", _REASONS[code])
    for code in codes:
        if code in RECONNECT_CODES:
            return Classified(Severity.RECONNECT, f"AADSTS{code}", _REASONS[code])
    if error == "interaction_required":
        first = codes[0] if codes else 0
        return Classified(Severity.RECONNECT, f"AADSTS{first}" if first else error,
                          "Microsoft 365 requires you to sign in again.")
    if error in ("temporarily_unavailable", "server_error"):
        return Classified(Severity.TRANSIENT, error, "Microsoft 365 is temporarily unavailable.")
    if error == "invalid_grant":
        first = codes[0] if codes else 0
        return Classified(Severity.RECONNECT, f"AADSTS{first}" if first else error,
                          "Microsoft 365 no longer accepts mailsync's sign-in for your mailbox.")
    error_code = f"AADSTS{codes[0]}" if codes else (error or f"http_{status}")
    return Classified(Severity.PERMANENT, error_code, "mailsync's request to Microsoft 365 was refused.")


def classify_authorize_error(error: str, description: str) -> Classified:
    """The authorize redirect's `error`/`error_description` (no error_codes there)."""
    match = _AADSTS.match(description or "")
    codes = [int(match.group(1))] if match else []
    return classify_identity_error(400, {"error": error, "error_codes": codes})


def retry_after_seconds(headers: Mapping[str, str]) -> float | None:
    """`Retry-After` as seconds; Graph may send fractions. HTTP dates are not used by Graph."""
    raw = headers.get("Retry-After")
    if raw is None:
        return None
    try:
        value = float(raw)
    except ValueError:
        return None
    return max(0.0, value)


def classify_graph_response(status: int, body: Mapping[str, Any] | None) -> Classified:
    error = (body or {}).get("error")
    code = str(error.get("code", "")) if isinstance(error, dict) else ""
    if status == 429 or status >= 500:
        return Classified(Severity.TRANSIENT, code or f"http_{status}", "Microsoft Graph is busy.")
    if status == 401:
        return Classified(Severity.RECONNECT, code or "http_401", "Microsoft Graph refused mailsync's token.")
    return Classified(Severity.PERMANENT, code or f"http_{status}", "Microsoft Graph refused the request.")

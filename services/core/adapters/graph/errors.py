"""One error tree for Graph and the identity platform, and the pure classification behind it.

Decisions come from HTTP status, `error` and `error_codes`, never from description text
(docs/graph.md#identity-errors). The only exception is the authorize redirect, which carries no `error_codes`:
there the AADSTS number at the start of `error_description` is the code.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from services.core.adapters.graph.claims import ClaimsChallenge, asks_for_claims


class Severity(StrEnum):
    TRANSIENT = "transient"  # retry with back-off; never a status change
    RECONNECT = "reconnect_required"  # the user must sign in again
    CONSENT = "consent_required"  # an administrator must approve the app
    PERMANENT = "permanent"  # a bug or bad request: do not retry


# Conditional Access: 53003 blocked by policy; 53000 device not compliant, 53001 device not domain-joined,
# 53002 app not approved (entra-docs, reference-error-codes). The user must sign in again from where the
# policy allows, or IT must change it; mailsync can do nothing but say so.
CONDITIONAL_ACCESS_CODES = frozenset({53000, 53001, 53002, 53003})
CONDITIONAL_ACCESS_REASON = ("Your organisation's access policy blocked mailsync: sign in again from a compliant "
                             "device or ask IT.")
RECONNECT_CODES = frozenset({50173, 70008, 700082, 50076, 50079, 50078, 70043, 700084, 50132, 50133}
                            | CONDITIONAL_ACCESS_CODES)
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
    **dict.fromkeys(CONDITIONAL_ACCESS_CODES, CONDITIONAL_ACCESS_REASON),
}


@dataclass(frozen=True)
class Classified:
    severity: Severity
    error_code: str  # e.g. "AADSTS50173" or "http_503" or "InvalidAuthenticationToken"
    reason: str  # plain words for the user


class GraphError(Exception):
    """Base of every Graph/identity failure; `classified` says what to do about it."""

    def __init__(self, classified: Classified, status: int | None = None, retry_after: float | None = None,
                 body: Mapping[str, Any] | None = None):
        super().__init__(f"{classified.severity.value}: {classified.error_code}")
        self.classified = classified
        self.status = status
        self.retry_after = retry_after
        self.body = body  # the error answer's JSON, when there was one (a whole-batch 424 carries steps)

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
    """Graph refused the access token itself: a `401`, or a `403` claims challenge (Conditional Access).
    Refresh the token once, passing the challenge's claims if there are any; the identity platform's
    answer decides the mailbox's status."""

    def __init__(self, classified: Classified, status: int | None = None,
                 challenge: ClaimsChallenge | None = None) -> None:
        super().__init__(classified, status)
        self.challenge = challenge


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


def header(headers: Mapping[str, str], name: str) -> str | None:
    """A header by name, case-insensitively: $batch steps may carry `retry-after`, `location` in lower case
    (docs/graph.md#batching). aiohttp's own headers are case-insensitive already; plain dicts are not."""
    found = headers.get(name)
    if found is not None:
        return found
    lowered = name.lower()
    for key, value in headers.items():
        if key.lower() == lowered:
            return value
    return None


def retry_after_seconds(headers: Mapping[str, str]) -> float | None:
    """`Retry-After` (any case) as seconds; Graph may send fractions. HTTP dates are not used by Graph."""
    raw = header(headers, "Retry-After")
    if raw is None:
        return None
    try:
        value = float(raw)
    except ValueError:
        return None
    if value != value or value in (float("inf"), float("-inf")):
        return None
    return max(0.0, value)


MAX_INNER_DEPTH = 16  # Graph nests two or three levels; a deeper body is not Graph's and is not walked further


def _get_ci(mapping: Mapping[str, Any], *names: str) -> Any:
    """The first of `names` present in `mapping`, keys compared case-insensitively."""
    wanted = {n.lower() for n in names}
    for key, value in mapping.items():
        if isinstance(key, str) and key.lower() in wanted:
            return value
    return None


def graph_error_codes(body: Mapping[str, Any] | None) -> list[str]:
    """The codes of a Graph error body, outermost first: `error.code`, then each `innerError.code` /
    `innererror.code` below it (keys in any case; at most MAX_INNER_DEPTH levels). The last is the most
    specific: `{"error":{"code":"InvalidRequest","innerError":{"code":"syncStateNotFound"}}}` is about
    expired delta state, not a bad request (docs/graph.md#delta, docs/graph.md#not-confirmed)."""
    codes: list[str] = []
    node = _get_ci(body or {}, "error")
    for _ in range(MAX_INNER_DEPTH):
        if not isinstance(node, Mapping):
            break
        code = _get_ci(node, "code")
        if isinstance(code, str) and code.strip():
            codes.append(code.strip()[:200])
        node = _get_ci(node, "innerError", "innererror", "inner_error")
    return codes


def classify_graph_response(status: int, body: Mapping[str, Any] | None,
                            www_authenticate: str | None = None) -> Classified:
    """A Graph error answer. `error_code` is the most specific code of the body (nested innerError codes
    included). A `403` whose WWW-Authenticate (or body code) says `insufficient_claims` is Conditional
    Access refusing the token: `reconnect_required` with error_code `conditional_access`, never a
    permanent error that would leave the mailbox `connected` while every call fails."""
    codes = graph_error_codes(body)
    code = codes[-1] if codes else ""
    claims_asked = asks_for_claims(www_authenticate) or any(c.lower() == "insufficient_claims" for c in codes)
    if status == 429 or status >= 500:
        return Classified(Severity.TRANSIENT, code or f"http_{status}", "Microsoft Graph is busy.")
    if status == 403 and claims_asked:
        return Classified(Severity.RECONNECT, "conditional_access", CONDITIONAL_ACCESS_REASON)
    if status == 401:
        return Classified(Severity.RECONNECT, code or "http_401", "Microsoft Graph refused mailsync's token.")
    return Classified(Severity.PERMANENT, code or f"http_{status}", "Microsoft Graph refused the request.")


def is_sync_state_lost_body(status: int, body: Mapping[str, Any] | None) -> bool:
    """410, or `syncStateNotFound` (or a sibling) at any depth of the error body."""
    return status == 410 or any(is_sync_state_lost(status, c) for c in graph_error_codes(body))

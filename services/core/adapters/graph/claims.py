"""Client capabilities and claims challenges (continuous access evaluation). Pure.

mailsync declares the `cp1` client capability in every token request, so Graph revokes its access
tokens as soon as a user's password is reset or Conditional Access blocks them, instead of letting them
work until they expire (60-90 minutes). Graph then answers `401` (revoked) or `403` (Conditional
Access) with a claims challenge:

    WWW-Authenticate: Bearer realm="", authorization_uri="https://login.microsoftonline.com/common/oauth2/authorize",
                      error="insufficient_claims", claims="eyJhY2Nlc3NfdG9rZW4iOnsibmJmIjp7ImVzc2VudGlhbCI6dHJ1ZX19fQ=="

and the client must ask the token endpoint again, passing the decoded claims (merged with its own cp1
declaration) as the `claims` parameter. docs/graph.md#cae (entra-docs
claims-challenge, entra-docs "continuous access evaluation").
"""

from __future__ import annotations

import base64
import binascii
import copy
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

CLIENT_CAPABILITIES = ("cp1",)
CP1_CLAIMS: Mapping[str, Any] = {"access_token": {"xms_cc": {"values": list(CLIENT_CAPABILITIES)}}}
MAX_HEADER = 8192  # a challenge header is a few hundred bytes; refuse to parse a flood

# token68 / auth-param grammar of RFC 9110 section 11: `scheme`, then `name=value` pairs (value a token or a
# quoted-string with backslash escapes), separated by commas; a bare token starts the next challenge.
_TCHARS = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
_PIECE = re.compile(
    rf"""\s*(?:
        (?P<name>{_TCHARS})\s*=\s*(?:"(?P<quoted>(?:[^"\\]|\\.)*)"|(?P<bare>{_TCHARS}=*))
      | (?P<scheme>{_TCHARS}=*)
      | (?P<comma>,)
    )""",
    re.VERBOSE,
)


@dataclass(frozen=True)
class ClaimsChallenge:
    """A `WWW-Authenticate` challenge with `error="insufficient_claims"` and readable `claims`."""

    scheme: str
    claims: Mapping[str, Any] = field(repr=False)
    params: Mapping[str, str] = field(repr=False)


def _challenges(header: str) -> list[tuple[str, dict[str, str]]]:
    """Every challenge of a (possibly combined) WWW-Authenticate value as (scheme, lower-cased params)."""
    found: list[tuple[str, dict[str, str]]] = []
    at = 0
    while at < len(header):
        match = _PIECE.match(header, at)
        if match is None or match.end() == at:
            break  # malformed from here on: keep what was read
        at = match.end()
        if match["scheme"] is not None:
            found.append((match["scheme"], {}))
        elif match["name"] is not None and found:
            quoted = match["quoted"]
            value = re.sub(r"\\(.)", r"\1", quoted) if quoted is not None else match["bare"]
            found[-1][1].setdefault(match["name"].lower(), value)
    return found


def _decode_claims(value: str) -> dict[str, Any] | None:
    """The claims parameter: base64 (standard or URL-safe, padding optional) of a JSON object; Microsoft
    documents base64, but a raw JSON object is accepted too."""
    text = value.strip()
    if text.startswith("{"):
        raw = text.encode()
    else:
        try:
            padded = text + "=" * (-len(text) % 4)
            raw = base64.b64decode(padded.replace("-", "+").replace("_", "/"), validate=True)
        except (binascii.Error, ValueError):
            return None
    try:
        claims = json.loads(raw)
    except (UnicodeDecodeError, ValueError):
        return None
    return claims if isinstance(claims, dict) and claims else None


def parse_claims_challenge(header: str | None) -> ClaimsChallenge | None:
    """The first challenge of `header` that asks for claims: `error="insufficient_claims"` and a `claims`
    parameter that decodes to a JSON object. Anything else (another error, no claims, bad base64 or JSON,
    an oversized header) is not a claims challenge."""
    if not header or len(header) > MAX_HEADER:
        return None
    for scheme, params in _challenges(header):
        if params.get("error", "").lower() != "insufficient_claims":
            continue
        claims = _decode_claims(params.get("claims", ""))
        if claims is not None:
            return ClaimsChallenge(scheme=scheme, claims=claims, params=params)
    return None


def asks_for_claims(header: str | None) -> bool:
    """`error="insufficient_claims"` in any challenge, readable claims or not (Conditional Access 403)."""
    if not header or len(header) > MAX_HEADER:
        return False
    return any(p.get("error", "").lower() == "insufficient_claims" for _, p in _challenges(header))


def _merge(into: dict[str, Any], extra: Mapping[str, Any]) -> None:
    for key, value in extra.items():
        here = into.get(key)
        if isinstance(here, dict) and isinstance(value, Mapping):
            _merge(here, value)
        elif isinstance(here, list) and isinstance(value, list):
            into[key] = here + [v for v in value if v not in here]
        else:
            into[key] = copy.deepcopy(value)


def token_request_claims(challenge: Mapping[str, Any] | None = None,
                         capabilities: tuple[str, ...] = CLIENT_CAPABILITIES) -> str | None:
    """The `claims` parameter of a token request: mailsync's capability declaration (cp1 unless configured
    otherwise), merged with what a claims challenge asked for (the challenge's values win, except that the
    capabilities stay in `xms_cc`). None when there is nothing to send."""
    merged: dict[str, Any] = {}
    if challenge:
        _merge(merged, challenge)
    if capabilities:
        _merge(merged, {"access_token": {"xms_cc": {"values": list(capabilities)}}})
    return json.dumps(merged, separators=(",", ":"), sort_keys=True) if merged else None

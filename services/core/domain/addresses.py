"""Email address normalisation for matching (pure, stdlib only).

What ``normalize_address`` accepts and what it returns
-------------------------------------------------------
Graph hands us whatever Exchange stored: usually a bare ``jane@example.com``, but also
``"Doe, Jane" <Jane.Doe@Example.COM>``, ``<jane@example.com>``, ``jane@example.com (Jane)``,
``"jane"@example.com``, ``jane@example.com.``, ``jane@bücher.example``, and for mailboxes without
an SMTP address the X.500 legacyExchangeDN (``/O=EXCHANGELABS/OU=.../CN=...``) or its IMCEAEX
encapsulation. The canonical form is the bare addr-spec ``local@domain``:

* display names, angle brackets, RFC 5322 comments, a ``mailto:`` prefix, an obsolete source
  route (``<@relay:jane@x>``) and surrounding whitespace are removed;
* a quoted local part is unquoted when its content needs no quoting (``"jane"@x`` == ``jane@x``);
  otherwise it is re-quoted canonically (``"jane doe"@x``);
* the local part is lowercased (and NFC-normalised): Exchange resolves addresses
  case-insensitively, and almost every other system does too in practice;
* the domain is lowercased, stripped of trailing dots and converted to its ASCII (punycode) form
  with the stdlib ``idna`` codec, so ``ü.example`` and ``xn--tda.example`` compare equal. Note the
  stdlib codec implements IDNA 2003 (``ß`` maps to ``ss``); the same codec is used everywhere in
  mailsync, so stored and incoming forms always agree;
* anything that is not an address (empty, no ``@``, several addresses, unbalanced quotes or
  brackets, X.500 / IMCEAEX strings, invalid domains) gives ``None``.

Plus-addressing (decision)
--------------------------
``jane+news@example.com`` is kept as is by ``normalize_address``: in many systems (and in many
contacts' own mail servers) the ``+tag`` form is a different mailbox, or at least a different
address a contact chose deliberately, so a contact ``jane+crm@x.com`` must not match ``jane@x.com``
and vice versa. The single exception is the mailbox owner: Exchange Online plus-addressing delivers
``user+tag@contoso.com`` to ``user@contoso.com``, so matching compares participants against the
owner's own addresses both as they are and after ``strip_plus_tag``. Nothing else strips tags.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable
from functools import lru_cache

__all__ = [
    "domain_of",
    "normalize_address",
    "normalize_domain",
    "parse_proxy_addresses",
    "strip_plus_tag",
]

# RFC 5322 atext specials (besides ASCII letters and digits); "." separates atoms.
_ATEXT_SPECIALS = frozenset("!#$%&'*+-/=?^_`{|}~")
_DOMAIN_LABEL_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-_")
# Local parts that encapsulate a non-SMTP address (IMCEAEX-_O=EXCHANGELABS_OU=...@tenant.outlook.com).
_ENCAPSULATED_PREFIXES = ("imceaex-", "imceainvalid-")
_MAX_INPUT = 2048  # longer strings are not addresses; keeps the scanner's work bounded


def _strip_comments_and_find_angle(raw: str) -> str | None:
    """Remove RFC 5322 comments outside quotes and return the addr-spec part of ``raw``.

    ``name <addr>`` gives ``addr``; a string without angle brackets is returned whole. Returns None
    for unbalanced quotes, comments or brackets, and for more than one angle address.
    """
    out: list[str] = []
    in_quote = False
    depth = 0  # comment nesting
    escaped = False
    lt = gt = -1
    angles = closes = 0
    for ch in raw:
        if escaped:
            escaped = False
            if depth == 0:
                out.append(ch)
            continue
        if ch == "\\" and (in_quote or depth > 0):
            escaped = True
            if depth == 0:
                out.append(ch)
            continue
        if depth > 0:
            if ch == "(":
                depth += 1
            elif ch == ")":
                depth -= 1
            continue
        if in_quote:
            if ch == '"':
                in_quote = False
            out.append(ch)
            continue
        if ch == '"':
            in_quote = True
            out.append(ch)
        elif ch == "(":
            depth = 1
        elif ch == ")":
            return None
        elif ch == "<":
            angles += 1
            lt = len(out)
            out.append(ch)
        elif ch == ">":
            closes += 1
            gt = len(out)
            out.append(ch)
        else:
            out.append(ch)
    if in_quote or depth or escaped:
        return None
    text = "".join(out)
    if angles == 0 and closes == 0:
        return text
    if angles != 1 or closes != 1 or gt < lt or text[gt + 1 :].strip():
        return None
    return text[lt + 1 : gt]


def _split_at(addr_spec: str) -> tuple[str, str] | None:
    """Split at the last ``@`` outside a quoted string."""
    in_quote = False
    escaped = False
    at = -1
    for i, ch in enumerate(addr_spec):
        if escaped:
            escaped = False
        elif ch == "\\" and in_quote:
            escaped = True
        elif ch == '"':
            in_quote = not in_quote
        elif ch == "@" and not in_quote:
            at = i
    if at == -1:
        return None
    return addr_spec[:at], addr_spec[at + 1 :]


def _is_bare_local_char(ch: str) -> bool:
    if ch.isascii():
        return ch.isalnum() or ch in _ATEXT_SPECIALS or ch == "."
    # SMTPUTF8 local parts: any printable, non-space non-ASCII character.
    return ch.isprintable() and not ch.isspace()


def _normalize_local(local: str) -> str | None:
    local = local.strip()
    if local.startswith('"'):
        if len(local) < 2 or not local.endswith('"'):
            return None
        content: list[str] = []
        escaped = False
        for ch in local[1:-1]:
            if escaped:
                content.append(ch)
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                return None  # obsolete mixtures like "a"."b" are not worth supporting
            else:
                content.append(ch)
        unquoted = "".join(content)
        if not unquoted or any(not ch.isprintable() for ch in unquoted if ch != " "):
            return None
        unquoted = unicodedata.normalize("NFC", unquoted).lower()
        if all(_is_bare_local_char(ch) for ch in unquoted):
            return unquoted
        return '"' + unquoted.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if not local or not all(_is_bare_local_char(ch) for ch in local):
        return None
    return unicodedata.normalize("NFC", local).lower()


@lru_cache(maxsize=16384)
def normalize_domain(raw: str) -> str | None:
    """Lowercase, strip trailing dots and convert to ASCII (punycode); None when not a domain.

    Use it for client domains and blocked domains too, so they compare equal to ``domain_of`` of
    a normalised address.
    """
    domain = raw.strip().rstrip(".").lower()
    if domain.startswith("@"):
        domain = domain[1:]
    if not domain or len(domain) > 255:
        return None
    if domain.startswith("[") and domain.endswith("]"):  # domain literal: [192.0.2.1], [ipv6:...]
        inner = domain[1:-1]
        if not inner or any(ch.isspace() or ch in "[]\\" for ch in inner):
            return None
        return domain
    try:
        ascii_domain = domain.encode("idna").decode("ascii")
    except UnicodeError:
        return None
    ascii_domain = ascii_domain.lower()
    labels = ascii_domain.split(".")
    if any(not label or not set(label) <= _DOMAIN_LABEL_CHARS for label in labels):
        return None
    return ascii_domain


@lru_cache(maxsize=65536)
def normalize_address(raw: str) -> str | None:
    """The canonical ``local@domain`` form of ``raw``, or None when ``raw`` is not an address."""
    if not raw or len(raw) > _MAX_INPUT:
        return None
    text = raw.strip()
    if not text or text.startswith("/"):  # X.500 legacyExchangeDN: /O=EXCHANGELABS/OU=...
        return None
    addr_spec = _strip_comments_and_find_angle(text)
    if addr_spec is None:
        return None
    addr_spec = addr_spec.strip()
    if addr_spec[:7].lower() == "mailto:":
        addr_spec = addr_spec[7:].strip()
    if addr_spec.startswith("@") and ":" in addr_spec:  # obsolete source route <@a,@b:jane@x>
        addr_spec = addr_spec.split(":", 1)[1].strip()
    if len(addr_spec) >= 2 and addr_spec[0] == addr_spec[-1] == "'":
        addr_spec = addr_spec[1:-1].strip()  # Outlook sometimes stores 'jane@x.com'
    parts = _split_at(addr_spec)
    if parts is None:
        return None
    local = _normalize_local(parts[0])
    domain = normalize_domain(parts[1])
    if local is None or domain is None:
        return None
    if local.startswith(_ENCAPSULATED_PREFIXES):
        return None
    return f"{local}@{domain}"


def strip_plus_tag(addr: str) -> str:
    """``user+tag@x`` -> ``user@x`` for a normalised address; other addresses are returned unchanged.

    Only for comparing against the mailbox owner's own addresses (Exchange plus-addressing).
    A quoted local part or one starting with ``+`` is left alone.
    """
    at = addr.rfind("@")
    if at <= 0:
        return addr
    local = addr[:at]
    if local.startswith('"'):
        return addr
    plus = local.find("+")
    if plus <= 0:
        return addr
    return local[:plus] + addr[at:]


def domain_of(addr: str) -> str:
    """The domain of a normalised address. Raises ValueError when ``addr`` has no ``@``."""
    at = addr.rfind("@")
    if at == -1:
        raise ValueError(f"not an email address: {addr!r}")
    return addr[at + 1 :]


def parse_proxy_addresses(values: Iterable[str]) -> frozenset[str]:
    """The normalised SMTP addresses among Graph ``proxyAddresses`` (``SMTP:primary``, ``smtp:alias``).

    Other address types (``X500:``, ``SIP:``, ``SPO:``, ...) and invalid entries are dropped.
    """
    found: set[str] = set()
    for value in values:
        prefix, sep, rest = value.strip().partition(":")
        if not sep or prefix.lower() != "smtp":
            continue
        addr = normalize_address(rest)
        if addr is not None:
            found.add(addr)
    return frozenset(found)

"""A user's own exclusions (``never_log`` on ``user.upserted``): pure parsing and matching.

An entry is an address (``jane@family.example``) or a whole domain (``@family.example``). Addresses and
domains are compared in their canonical forms (``services.core.domain.addresses``): case-insensitively, IDN domains
as punycode. A domain entry covers that exact domain, not its subdomains (as client domains do); a
plus-address is its own address (``jane+x@`` is not ``jane@``), except that a domain entry covers it.
"""

from __future__ import annotations

from collections.abc import Iterable

from services.core.domain.addresses import domain_of, normalize_address, normalize_domain

__all__ = ["canonical_entry", "excluded_by"]


def canonical_entry(raw: str) -> str | None:
    """``"addr@x"`` or ``"@domain"`` in canonical form; None when the text is neither."""
    text = raw.strip()
    if text.startswith("@"):
        domain = normalize_domain(text[1:]) if not text.startswith("@@") else None
        return f"@{domain}" if domain is not None and "." in domain else None
    return normalize_address(text)


def excluded_by(address: str, entries: Iterable[str]) -> str | None:
    """The entry that excludes this (normalised) address, or None. Entries are canonicalised here too, so
    a caller holding raw text still compares case-insensitively."""
    canonical = normalize_address(address)
    if canonical is None:
        return None
    domain = f"@{domain_of(canonical)}"
    for raw in entries:
        entry = canonical_entry(raw)
        if entry is not None and entry in (canonical, domain):
            return entry
    return None

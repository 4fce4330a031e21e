"""Is this bulk or machine mail? A pure reading of a message's Internet headers (docs/design.md#automated).

Mail carrying any of these is automated (an account with ``exclude_automated`` never turns it into an
engagement):

* ``List-Unsubscribe`` or ``List-Id`` with a value (RFC 2369 / RFC 2919: mailing lists and newsletters);
* ``Precedence: bulk | list | junk`` (the de-facto marker of bulk senders and list servers);
* ``Auto-Submitted`` with any keyword other than ``no`` (RFC 3834: ``auto-generated``, ``auto-replied``,
  ``auto-notified``, or anything a machine invented).

Header names compare case-insensitively (RFC 5322 field names are case-insensitive and Graph returns them
as the sender wrote them). Values are read leniently: surrounding and folding whitespace, letter case,
RFC 3834 parameters (``auto-replied; owner-email=...``) and comments (``no (manual)``) do not change the
verdict; a header present with a blank value says nothing, so it counts as absent.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["Automation", "classify", "from_graph"]

BULK_PRECEDENCE = frozenset({"bulk", "list", "junk"})
# The keyword of a structured value: what precedes parameters (";"), comments ("(") or whitespace.
_KEYWORD = re.compile(r"\s*([^\s;(]*)")
_MAX_VALUE = 200  # shown in a reason; real values are short, a hostile one is cut


@dataclass(frozen=True)
class Automation:
    """The header that marks the mail as automated, with its value as the message carries it."""

    header: str  # canonical spelling: "List-Unsubscribe", "List-Id", "Precedence", "Auto-Submitted"
    value: str

    def describe(self) -> str:
        value = self.value if len(self.value) <= _MAX_VALUE else self.value[:_MAX_VALUE - 3] + "..."
        return f"{self.header}: {value}"


def _keyword(value: str) -> str:
    match = _KEYWORD.match(value)
    return match.group(1).lower() if match else ""


def _clean(value: str) -> str:
    return " ".join(value.split())  # unfold and trim


def classify(headers: Iterable[tuple[str, str]]) -> Automation | None:
    """The first header (in the message's order) that makes the mail automated, or None."""
    for raw_name, raw_value in headers:
        name = raw_name.strip().lower()
        value = _clean(raw_value)
        if not value:
            continue
        if name == "list-unsubscribe":
            return Automation("List-Unsubscribe", value)
        if name == "list-id":
            return Automation("List-Id", value)
        if name == "precedence" and _keyword(value) in BULK_PRECEDENCE:
            return Automation("Precedence", value)
        if name == "auto-submitted":
            keyword = _keyword(value)
            if keyword and keyword != "no":
                return Automation("Auto-Submitted", value)
    return None


def from_graph(value: object) -> list[tuple[str, str]]:
    """Graph's ``internetMessageHeaders`` (``[{"name", "value"}]``) as pairs; anything malformed is skipped."""
    if not isinstance(value, list):
        return []
    pairs: list[tuple[str, str]] = []
    for item in value:
        if isinstance(item, dict) and isinstance(item.get("name"), str) and isinstance(item.get("value"), str):
            pairs.append((item["name"], item["value"]))
    return pairs

"""Privacy tiers: what an engagement keeps and publishes about an email's content (pure).

``metadata`` keeps participants, direction, time and ids only; ``subject`` adds the subject (the default);
``preview`` adds Graph's ``bodyPreview`` (the first 255 characters of the body). Bodies are never kept.
The tiers are ordered, so "above the account's tier" (what the purge removes) is well defined.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

__all__ = ["DEFAULT", "Capture", "Kept", "keep", "parse", "published_fields"]

PREVIEW_MAX = 255  # Graph's bodyPreview is at most this long; a longer value is cut, never kept whole


class Capture(StrEnum):
    METADATA = "metadata"
    SUBJECT = "subject"
    PREVIEW = "preview"

    @property
    def level(self) -> int:
        return _LEVELS[self]

    def keeps_subject(self) -> bool:
        return self.level >= _LEVELS[Capture.SUBJECT]

    def keeps_preview(self) -> bool:
        return self is Capture.PREVIEW


_LEVELS = {Capture.METADATA: 0, Capture.SUBJECT: 1, Capture.PREVIEW: 2}
DEFAULT = Capture.SUBJECT


def parse(value: Any) -> Capture:
    """A tier from an event or a row; ValueError for anything else (None gives the default)."""
    if value is None:
        return DEFAULT
    if isinstance(value, str):
        try:
            return Capture(value)
        except ValueError:
            pass
    raise ValueError(f"capture must be one of metadata, subject, preview (got {str(value)[:40]!r})")


@dataclass(frozen=True)
class Kept:
    """The content columns of a stored engagement: None where the tier keeps nothing."""

    subject: str | None
    preview: str | None


def keep(capture: Capture, subject: str, preview: str) -> Kept:
    """What a tier lets mailsync store of a message's subject and body preview."""
    return Kept(subject=subject if capture.keeps_subject() else None,
                preview=preview[:PREVIEW_MAX] if capture.keeps_preview() else None)


def published_fields(capture: Capture, subject: str | None, preview: str | None) -> dict[str, str]:
    """The content fields the API and engagement.created show for a row stored under ``capture``:
    none for metadata, ``subject`` for subject, ``subject`` and ``preview`` for preview."""
    out: dict[str, str] = {}
    if capture.keeps_subject():
        out["subject"] = subject or ""
    if capture.keeps_preview():
        out["preview"] = preview or ""
    return out

"""`mailsync purge-content` decided without PostgreSQL: services/core/purge.trim_to_tier against in-memory fakes
of AccountPolicies.capture_of and StoredContent (services/core/adapters/store/ has the real ones)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import pytest

from services.core.application.purge import Purged, trim_to_tier
from services.core.domain.capture import Capture

ACCOUNT = "acct-1"


@dataclass
class FakeTiers:
    tiers: dict[str, Capture] = field(default_factory=dict)

    async def capture_of(self, account_id: str) -> Capture | None:
        return self.tiers.get(account_id)


@dataclass
class FakeContent:
    """Engagements as (capture) per row, and how many decisions still hold a subject."""
    engagements: list[str] = field(default_factory=list)
    decision_subjects: int = 0
    batches: list[tuple[str, int]] = field(default_factory=list)  # (statement, rows changed)

    async def trim_engagements(self, account_id: str, above: Sequence[str], tier: Capture, limit: int) -> int:
        chosen = [i for i, c in enumerate(self.engagements) if c in above][:limit]
        for i in chosen:
            self.engagements[i] = tier.value
        self.batches.append(("engagements", len(chosen)))
        return len(chosen)

    async def drop_decision_subjects(self, account_id: str, limit: int) -> int:
        count = min(limit, self.decision_subjects)
        self.decision_subjects -= count
        self.batches.append(("decisions", count))
        return count


async def test_an_unknown_account_is_refused_before_any_trim() -> None:
    content = FakeContent(engagements=["preview"])
    with pytest.raises(LookupError, match="no account 'nope'"):
        await trim_to_tier(FakeTiers(), content, "nope")
    assert content.batches == []


async def test_the_top_tier_trims_nothing() -> None:
    content = FakeContent(engagements=["preview", "subject"], decision_subjects=3)
    purged = await trim_to_tier(FakeTiers({ACCOUNT: Capture.PREVIEW}), content, ACCOUNT)
    assert purged == Purged(ACCOUNT, Capture.PREVIEW, 0, 0) and content.batches == []


async def test_subject_tier_trims_previews_in_batches_and_keeps_decision_subjects() -> None:
    content = FakeContent(engagements=["preview"] * 5 + ["subject", "metadata"], decision_subjects=3)
    purged = await trim_to_tier(FakeTiers({ACCOUNT: Capture.SUBJECT}), content, ACCOUNT, batch=2)
    assert purged == Purged(ACCOUNT, Capture.SUBJECT, 5, 0)
    assert content.batches == [("engagements", 2), ("engagements", 2), ("engagements", 1)]
    assert content.engagements == ["subject"] * 6 + ["metadata"] and content.decision_subjects == 3


async def test_metadata_tier_trims_engagements_then_decision_subjects_until_a_short_batch() -> None:
    content = FakeContent(engagements=["preview", "subject", "metadata", "subject"], decision_subjects=4)
    purged = await trim_to_tier(FakeTiers({ACCOUNT: Capture.METADATA}), content, ACCOUNT, batch=2)
    assert purged == Purged(ACCOUNT, Capture.METADATA, 3, 4)
    # a full batch is followed by another, which finds nothing left
    assert content.batches == [("engagements", 2), ("engagements", 1), ("decisions", 2), ("decisions", 2),
                               ("decisions", 0)]
    assert content.engagements == ["metadata"] * 4 and content.decision_subjects == 0

"""What one enrolment pass of the tenant-wide connection does, decided without PostgreSQL or Graph: who is
looked up and probed, who is left alone, who is unenrolled."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from services.core.application.tenant import RECHECK_OUT_OF_SCOPE, Candidate, plan_pass

NOW = datetime(2026, 11, 29, 9, 0, tzinfo=UTC)
RECENT, LONG_AGO = NOW - timedelta(minutes=5), NOW - RECHECK_OUT_OF_SCOPE - timedelta(minutes=1)


def candidates(*user_ids: str) -> list[Candidate]:
    return [Candidate(u, f"{u}@contoso.example") for u in user_ids]


def test_new_mailboxes_are_enrolled_and_synced_ones_left_alone() -> None:
    plan = plan_pass(candidates("new", "synced", "stopped", "broken"),
                     {"synced": {"state": "enrolled", "checked_at": RECENT},
                      "stopped": {"state": "enrolled", "checked_at": RECENT},
                      "broken": {"state": "enrolled", "checked_at": RECENT}},
                     {"synced": {"connection_id": "c1", "status": "connected"},
                      "stopped": {"connection_id": "c2", "status": "disconnected"},  # the user's own choice
                      "broken": {"connection_id": "c3", "status": "consent_required"}},
                     NOW)
    assert [c.user_id for c in plan.enrol] == ["new", "broken"] and plan.unenrol == []


def test_out_of_scope_and_failed_mailboxes_are_rechecked_only_after_the_interval() -> None:
    decisions = {"scoped": {"state": "out_of_scope", "checked_at": RECENT},
                 "failed": {"state": "failed", "checked_at": RECENT},
                 "scoped_long_ago": {"state": "out_of_scope", "checked_at": LONG_AGO},
                 "failed_long_ago": {"state": "failed", "checked_at": LONG_AGO}}
    plan = plan_pass(candidates(*decisions), decisions, {}, NOW)
    assert [c.user_id for c in plan.enrol] == ["scoped_long_ago", "failed_long_ago"]


def test_mailboxes_no_longer_candidates_are_unenrolled_unless_already_disconnected() -> None:
    plan = plan_pass(candidates("kept"), {"kept": {"state": "enrolled", "checked_at": RECENT}},
                     {"kept": {"connection_id": "c1", "status": "connected"},
                      "deleted_user": {"connection_id": "c2", "status": "connected"},
                      "removed_shared": {"connection_id": "c3", "status": "consent_required"},
                      "gone_already": {"connection_id": "c4", "status": "disconnected"}},
                     NOW)
    assert plan.enrol == [] and plan.unenrol == [("deleted_user", "c2"), ("removed_shared", "c3")]

import itertools
from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from services.core.domain.schedule import estimate_total, next_poll_at, poll_offset, windows

HOUR = timedelta(hours=1)
NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


def test_polls_spread_over_the_hour():
    minutes = [poll_offset(f"conn-{i}", HOUR).total_seconds() // 60 for i in range(600)]
    per_quarter = [sum(1 for m in minutes if q * 15 <= m < (q + 1) * 15) for q in range(4)]
    assert all(120 <= n <= 180 for n in per_quarter), per_quarter  # 150 expected in each quarter


@settings(max_examples=200, deadline=None)
@given(st.text(min_size=1, max_size=40), st.integers(min_value=0, max_value=10_000_000))
def test_next_poll_is_within_one_interval_and_on_the_mailbox_slot(connection_id, seconds):
    now = NOW + timedelta(seconds=seconds)
    at = next_poll_at(connection_id, now, HOUR)
    assert now < at <= now + HOUR
    assert next_poll_at(connection_id, at, HOUR) - at == HOUR


def test_windows_cover_the_range_newest_first_without_gaps():
    since, until = NOW - timedelta(days=3, hours=5), NOW
    parts = windows(since, until, timedelta(days=1))
    assert parts[0][1] == until and parts[-1][0] == since
    assert all(a[0] == b[1] for a, b in itertools.pairwise(parts))
    assert windows(until, since, timedelta(days=1)) == []


def test_estimate_extrapolates_from_the_covered_part():
    assert estimate_total(50, timedelta(days=1), timedelta(days=4)) == 200
    assert estimate_total(50, timedelta(0), timedelta(days=4)) == 50
    assert estimate_total(70, timedelta(days=4), timedelta(days=4)) == 70

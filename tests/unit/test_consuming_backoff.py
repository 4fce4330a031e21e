"""The consumer loop's back-off: grows with consecutive failures up to the cap, with jitter, and starts over
after a success."""

from __future__ import annotations

import itertools

from services.core.adapters.consuming import Backoff


def test_grows_to_the_cap_and_starts_over_after_a_success() -> None:
    backoff = Backoff(max_s=30.0)
    waits = [backoff.failed() for _ in range(10)]
    assert 0.5 <= waits[0] <= 1.0
    assert all(later >= earlier / 2 for earlier, later in itertools.pairwise(waits))
    assert waits[3] >= 4.0 and waits[-1] == 30.0 and max(waits) <= 30.0
    backoff.succeeded()
    assert backoff.failed() <= 1.0


def test_two_replicas_do_not_wait_in_step() -> None:
    first, second = Backoff(30.0), Backoff(30.0)
    pairs = [(first.failed(), second.failed()) for _ in range(4)]
    assert any(a != b for a, b in pairs)

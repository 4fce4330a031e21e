"""The matcher's batch: transient failures rewind the batch, but only a bounded number of times."""

import pytest

from services.core.adapters.consuming import Record
from services.core.adapters.graph.errors import Classified, GraphError, Severity
from services.matcher import consumer
from services.matcher.handler import Handled, Outcome


async def test_a_record_that_keeps_failing_goes_to_the_dlq_after_bounded_attempts(monkeypatch):
    calls = {"n": 0}

    async def always_busy(event, deps):
        calls["n"] += 1
        raise GraphError(Classified(Severity.TRANSIENT, "http_503", "busy"), 503)

    monkeypatch.setattr(consumer, "handle_message_changed", always_busy)
    batch = consumer.NotificationBatch(deps=None, publisher=None, max_attempts=3)  # type: ignore[arg-type]
    record = Record("mailsync.notifications.v1", 0, 42, "k", {"type": "message.changed"})
    for _ in range(2):
        with pytest.raises(GraphError):
            await batch([record])  # rewound: the consumer loop retries the batch
    poison = await batch([record])
    assert [(r.offset, why.startswith("gave up after 3 attempts")) for r, why in poison] == [(42, True)]
    assert calls["n"] == 3


async def test_success_clears_the_failure_count(monkeypatch):
    outcomes = iter([GraphError(Classified(Severity.TRANSIENT, "x", "y")), Handled(Outcome.SKIPPED)])

    async def flaky(event, deps):
        result = next(outcomes)
        if isinstance(result, Exception):
            raise result
        return result

    monkeypatch.setattr(consumer, "handle_message_changed", flaky)
    batch = consumer.NotificationBatch(deps=None, publisher=None, max_attempts=2)  # type: ignore[arg-type]
    record = Record("t", 0, 1, "k", {"type": "message.changed"})
    with pytest.raises(GraphError):
        await batch([record])
    assert await batch([record]) == []
    assert batch._failures == {}

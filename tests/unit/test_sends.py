"""The pure rules of sending from the application: request validation, the crash-recovery decisions that keep
a send from going out twice, Exchange's sending limits, and how Graph's answers are read."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from services.core.domain.sends import (
    LOOK_AGAIN,
    MAX_QUEUED,
    SETTLE,
    Claimed,
    Outcome,
    RecentSending,
    SendRequestError,
    Step,
    after_lookup,
    before_call,
    classify_send_answer,
    graph_message,
    internet_message_id_for,
    parse_send_request,
    sending_limit,
)

NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)


def request(**overrides: object) -> dict[str, object]:
    body: dict[str, object] = {"to": ["jane@client.example"], "cc": [], "subject": "Proposal", "body": "Hi",
                               "body_type": "text", "idempotency_key": "order-42"}
    body.update(overrides)
    return body


def test_a_good_request_is_normalized():
    parsed = parse_send_request(request(to=["Jane@Client.EXAMPLE"], cc=["bob@x.example"], body_type="html"))
    assert parsed.to == ("jane@client.example",) and parsed.cc == ("bob@x.example",)
    assert parsed.recipient_count == 2 and parsed.body_type == "html" and parsed.idempotency_key == "order-42"


@pytest.mark.parametrize(("overrides", "words"), [
    ({"to": ["jane@client.example", "not-an-address"]}, "to[1] is not a valid email address"),
    ({"cc": ["Jane <jane@client.example>"]}, "cc[0] is not a valid email address"),
    ({"to": ["a@x.example, b@x.example"]}, "to[0]"),
    ({"to": [], "cc": []}, "at least one recipient"),
    ({"to": [f"r{i}@x.example" for i in range(400)], "cc": [f"c{i}@x.example" for i in range(101)]},
     "501 recipients"),
    ({"to": "jane@client.example"}, "to must be a list"),
    ({"to": [42]}, "to[0] must be a string"),
    ({"bcc": ["x@y.example"]}, "bcc is not supported"),
    ({"body_type": "markdown"}, "body_type"),
    ({"body": "x" * (512 * 1024 + 1)}, "body is larger than 512 KB"),
    ({"subject": "two\nlines"}, "subject must be one line"),
    ({"subject": 5}, "subject must be a string"),
    ({"idempotency_key": ""}, "idempotency_key is required"),
    ({"idempotency_key": "has space"}, "idempotency_key"),
    ({"idempotency_key": "k" * 201}, "idempotency_key"),
])
def test_bad_requests_name_the_problem(overrides: dict[str, object], words: str):
    with pytest.raises(SendRequestError) as caught:
        parse_send_request(request(**overrides))
    assert words in str(caught.value)


def test_five_hundred_recipients_are_allowed():
    parsed = parse_send_request(request(to=[f"r{i}@x.example" for i in range(500)]))
    assert parsed.recipient_count == 500


def test_not_an_object():
    with pytest.raises(SendRequestError, match="JSON object"):
        parse_send_request(["to"])


def test_the_message_carries_the_id_mailsync_chose_and_the_send_id():
    send_id = str(uuid.uuid4())
    imid = internet_message_id_for(send_id, "sam@contoso.example")
    assert imid == f"<{uuid.UUID(send_id).hex}.mailsync@contoso.example>"
    message = graph_message(subject="S", body="<b>x</b>", body_type="html", to=["a@x.example"], cc=[],
                            internet_message_id=imid, send_id=send_id)
    assert message["internetMessageId"] == imid and message["body"]["contentType"] == "HTML"
    assert message["singleValueExtendedProperties"][0]["value"] == send_id


def claimed(*, in_doubt: bool, started: datetime | None = None, created: datetime | None = None) -> Claimed:
    return Claimed(in_doubt=in_doubt, attempt_started_at=started, created_at=created or NOW - timedelta(minutes=1))


def test_a_send_never_called_is_sent():
    assert before_call(claimed(in_doubt=False), NOW).step is Step.SEND


def test_a_send_in_doubt_is_looked_up_before_anything_else():
    # Even past the maximum age: it may have gone, and failing it would be a lie.
    assert before_call(claimed(in_doubt=True, created=NOW - MAX_QUEUED * 2), NOW).step is Step.LOOK_UP


def test_found_means_sent_and_is_never_sent_again():
    assert after_lookup(claimed(in_doubt=True, started=NOW), True, NOW).step is Step.MARK_SENT


def test_absent_right_after_the_call_proves_nothing_so_it_waits():
    decision = after_lookup(claimed(in_doubt=True, started=NOW - timedelta(seconds=10)), False, NOW)
    assert decision.step is Step.WAIT and decision.until == NOW + LOOK_AGAIN  # looked up again meanwhile
    last = after_lookup(claimed(in_doubt=True, started=NOW - SETTLE + timedelta(seconds=20)), False, NOW)
    assert last.step is Step.WAIT and last.until == NOW + timedelta(seconds=20)  # never past the settle time


def test_absent_after_the_settle_time_is_sent_again():
    assert after_lookup(claimed(in_doubt=True, started=NOW - SETTLE), False, NOW).step is Step.SEND


def test_a_send_queued_too_long_fails_with_the_reason():
    decision = before_call(claimed(in_doubt=False, created=NOW - MAX_QUEUED - timedelta(seconds=1)), NOW)
    assert decision.step is Step.FAIL and "not sent within 25 hours" in (decision.reason or "")


def test_thirty_a_minute_then_wait_for_the_oldest_to_leave_the_minute():
    times = tuple(NOW - timedelta(seconds=50) + timedelta(seconds=i) for i in range(30))
    decision = sending_limit(RecentSending(times, tuple((t, 1) for t in times)), 1, NOW)
    assert decision is not None and decision.step is Step.WAIT
    assert decision.until == times[0] + timedelta(minutes=1) and "30 messages a minute" in (decision.reason or "")
    assert sending_limit(RecentSending(times[1:], tuple((t, 1) for t in times[1:])), 1, NOW) is None


def test_ten_thousand_recipients_a_day():
    day = tuple((NOW - timedelta(hours=23 - i), 500) for i in range(20))  # 10,000 in the last 24 hours
    decision = sending_limit(RecentSending((), day), 3, NOW)
    assert decision is not None and decision.until == day[0][0] + timedelta(days=1)
    assert "10000 recipients a day" in (decision.reason or "")
    assert sending_limit(RecentSending((), day[1:]), 500, NOW) is None


def test_answers_are_read_safely():
    assert classify_send_answer(202, "", None).outcome is Outcome.SENT
    assert classify_send_answer(None, "network_error", None).outcome is Outcome.UNCERTAIN
    assert classify_send_answer(504, "UnknownError", None).outcome is Outcome.UNCERTAIN
    throttled = classify_send_answer(429, "ApplicationThrottled", 7.5)
    assert throttled.outcome is Outcome.THROTTLED and throttled.retry_after_s == 7.5
    failed = classify_send_answer(400, "ErrorInvalidRecipients", None)
    assert failed.outcome is Outcome.FAILED and "ErrorInvalidRecipients" in (failed.reason or "")

"""Graph fidelity (issue 11): the pure parts. Times with offsets, nested error codes, $batch steps,
claims challenges, Conditional Access, the reauthorizationRequired catch-up decision."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.core.graph.times import parse_graph_time, parse_graph_time_or_none

# --- times -------------------------------------------------------------------------------------------


def test_offset_after_seven_fraction_digits_is_kept() -> None:
    parsed = parse_graph_time("2022-01-02T03:12:18.2257768+05:30")
    assert parsed == datetime(2022, 1, 1, 21, 42, 18, 225776, tzinfo=UTC)
    assert parsed.tzinfo is UTC


@pytest.mark.parametrize(("text", "expected"), [
    ("2024-05-01T10:00:00Z", datetime(2024, 5, 1, 10, tzinfo=UTC)),
    ("2024-05-01T10:00:00.1234567Z", datetime(2024, 5, 1, 10, 0, 0, 123456, tzinfo=UTC)),
    ("2024-05-01T10:00:00.1234560+00:00", datetime(2024, 5, 1, 10, 0, 0, 123456, tzinfo=UTC)),
    ("2024-05-01T10:00:00-08:00", datetime(2024, 5, 1, 18, tzinfo=UTC)),
    ("2024-05-01T10:00:00.5-0130", datetime(2024, 5, 1, 11, 30, 0, 500000, tzinfo=UTC)),
    ("2024-05-01T10:00:00+01", datetime(2024, 5, 1, 9, tzinfo=UTC)),
    ("2024-05-01T10:00:00", datetime(2024, 5, 1, 10, tzinfo=UTC)),  # no zone: UTC
    ("2024-05-01T10:00Z", datetime(2024, 5, 1, 10, tzinfo=UTC)),
])
def test_graph_time_forms(text: str, expected: datetime) -> None:
    assert parse_graph_time(text) == expected


@pytest.mark.parametrize("text", ["", "yesterday", "2024-05-01", "2024-05-01T10:00:00+24:00",
                                  "2024-13-01T10:00:00Z", "2024-05-01T10:00:00.Z", "2024-05-01T10:00:00+5:30"])
def test_unreadable_times_raise(text: str) -> None:
    with pytest.raises(ValueError):
        parse_graph_time(text)
    assert parse_graph_time_or_none(text) is None


def test_optional_times() -> None:
    assert parse_graph_time_or_none(None) is None
    assert parse_graph_time_or_none(12) is None
    assert parse_graph_time_or_none("2024-05-01T10:00:00Z") == datetime(2024, 5, 1, 10, tzinfo=UTC)


def _format(at: datetime, digits: int, seventh: int) -> str:
    """Graph's way: local wall time, `digits` fraction digits (the 7th a tick below the microsecond)."""
    offset = at.utcoffset()
    assert offset is not None
    text = at.strftime("%Y-%m-%dT%H:%M:%S")
    fraction = f"{at.microsecond:06d}" + str(seventh)
    if digits:
        text += "." + fraction[:digits]
    if offset == timedelta(0):
        return text + "Z"
    minutes = int(offset.total_seconds()) // 60
    sign = "+" if minutes >= 0 else "-"
    return f"{text}{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"


@given(
    at=st.datetimes(min_value=datetime(1900, 1, 2), max_value=datetime(2200, 12, 30)),
    offset_min=st.integers(min_value=-(23 * 60 + 59), max_value=23 * 60 + 59),
    digits=st.integers(min_value=0, max_value=7),
    seventh=st.integers(min_value=0, max_value=9),
)
def test_any_aware_time_parses_back_to_the_microsecond(at: datetime, offset_min: int, digits: int,
                                                       seventh: int) -> None:
    local = at.replace(tzinfo=timezone(timedelta(minutes=offset_min)))
    kept = 10 ** (6 - min(digits, 6))  # what the written digits can carry
    expected = local.replace(microsecond=local.microsecond // kept * kept)
    parsed = parse_graph_time(_format(local, digits, seventh))
    assert parsed == expected
    assert parsed.tzinfo is UTC


# --- nested error codes ------------------------------------------------------------------------------

from services.core.graph.client import error_for, read_batch_round  # noqa: E402
from services.core.graph.errors import (  # noqa: E402
    CONDITIONAL_ACCESS_REASON,
    MAX_INNER_DEPTH,
    AccessTokenRejected,
    DeltaExpired,
    GraphError,
    NotFound,
    Severity,
    classify_graph_response,
    classify_identity_error,
    graph_error_codes,
    header,
    retry_after_seconds,
)


def test_nested_codes_outermost_first_any_key_case() -> None:
    body = {"Error": {"code": "InvalidRequest", "InnerError": {"code": "ErrorInvalidRequest",
                                                                "innererror": {"CODE": "syncStateNotFound"}}}}
    assert graph_error_codes(body) == ["InvalidRequest", "ErrorInvalidRequest", "syncStateNotFound"]
    assert classify_graph_response(400, body).error_code == "syncStateNotFound"


def test_inner_error_without_code_keeps_the_outer_one() -> None:
    body = {"error": {"code": "ErrorItemNotFound", "innerError": {"date": "2024-01-01T00:00:00", "request-id": "x"}}}
    assert classify_graph_response(404, body).error_code == "ErrorItemNotFound"


def test_nesting_is_bounded() -> None:
    node: dict[str, object] = {"code": "deepest"}
    for i in range(100):
        node = {"code": f"level{i}", "innerError": node}
    codes = graph_error_codes({"error": node})
    assert len(codes) == MAX_INNER_DEPTH


@pytest.mark.parametrize("body", [None, {}, {"error": "text"}, {"error": {"code": 5}}, {"error": []}])
def test_odd_error_bodies(body: dict[str, object] | None) -> None:
    assert classify_graph_response(400, body).error_code == "http_400"


@pytest.mark.parametrize("status", [400, 404, 409])
def test_sync_state_below_a_generic_code_restarts_the_folder(status: int) -> None:
    body = {"error": {"code": "BadRequest", "innerError": {"code": "SYNCSTATENOTFOUND"}}}
    error = error_for(status, body, {"location": "https://graph/delta?fresh"}, None)
    assert isinstance(error, DeltaExpired)
    assert error.location == "https://graph/delta?fresh"


def test_gone_is_delta_expired_and_not_found_stays_not_found() -> None:
    assert isinstance(error_for(410, None, {}, None), DeltaExpired)
    assert isinstance(error_for(404, {"error": {"code": "ErrorItemNotFound"}}, {}, None), NotFound)


# --- $batch ------------------------------------------------------------------------------------------

def test_headers_in_any_case() -> None:
    assert header({"retry-after": "3"}, "Retry-After") == "3"
    assert header({"LOCATION": "x"}, "location") == "x"
    assert header({}, "Location") is None
    assert retry_after_seconds({"retry-after": "2.5"}) == 2.5
    assert retry_after_seconds({"Retry-After": "nan"}) is None
    assert retry_after_seconds({"Retry-After": "-4"}) == 0.0


def test_batch_round_reads_lower_case_headers_and_waits_for_the_longest() -> None:
    responses = [
        {"id": "0", "status": 200, "body": {"id": "inbox"}},
        {"id": "1", "status": 429, "headers": {"retry-after": "7"}, "body": {"error": {"code": "TooManyRequests"}}},
        {"id": "2", "status": 429, "headers": {"Retry-After": "3"}},
        {"id": "3", "status": 410, "headers": {"location": "https://graph/fresh"}},
        {"id": "4", "status": 424, "body": {"error": {"code": "FailedDependency"}}},
        {"id": "5", "status": 404, "body": {"error": {"code": "ErrorItemNotFound"}}},
    ]
    round_ = read_batch_round([0, 1, 2, 3, 4, 5, 6], responses, last_round=False)
    assert round_.done[0] == {"id": "inbox"}
    assert isinstance(round_.done[3], DeltaExpired) and round_.done[3].location == "https://graph/fresh"
    assert isinstance(round_.done[5], NotFound)
    assert round_.retry == [1, 2, 4, 6]  # throttled, failed dependency, and the unanswered one
    assert round_.wait == 7.0


def test_whole_batch_refused_retries_every_step_after_its_retry_after() -> None:
    round_ = read_batch_round([2, 5, 9], None, last_round=False, envelope_retry_after=4.0)
    assert round_.retry == [2, 5, 9] and round_.wait == 4.0 and not round_.done


def test_whole_batch_424_with_inner_steps() -> None:
    responses = [{"id": "0", "status": 200, "body": {}},
                 {"id": "1", "status": 429, "headers": {"retry-after": "12"}},
                 {"id": "2", "status": 424}]
    round_ = read_batch_round([0, 1, 2], responses, last_round=False, envelope_retry_after=1.0)
    assert round_.done == {0: {}} and round_.retry == [1, 2] and round_.wait == 12.0


def test_last_round_ends_every_step() -> None:
    responses = [{"id": "1", "status": 429, "headers": {"retry-after": "1"}}]
    round_ = read_batch_round([0, 1], responses, last_round=True)
    assert not round_.retry
    assert all(isinstance(e, GraphError) and e.transient for e in round_.done.values())
    assert round_.done[0].classified.error_code == "batch_exhausted"  # type: ignore[union-attr]


def test_junk_steps_are_ignored() -> None:
    responses = ["x", {"id": "nope", "status": 200}, {"id": "0", "status": "bad"}, {"id": "7", "status": 200},
                 {"id": "0", "status": 200, "body": {"a": 1}, "headers": ["not", "a", "dict"]}]
    round_ = read_batch_round([0], responses, last_round=False)
    assert round_.done == {0: {"a": 1}} and not round_.retry


# --- Conditional Access ------------------------------------------------------------------------------

CA_HEADER = ('Bearer realm="", authorization_uri="https://login.microsoftonline.com/common/oauth2/authorize", '
             'client_id="00000003-0000-0000-c000-000000000000", error="insufficient_claims", '
             'claims="eyJhY2Nlc3NfdG9rZW4iOnsiY2Fwb2xpZHMiOnsiZXNzZW50aWFsIjp0cnVlLCJ2YWx1ZXMiOlsiMSJdfX19"')


def test_graph_403_insufficient_claims_is_reconnect_with_the_policy_reason() -> None:
    classified = classify_graph_response(403, {"error": {"code": "AccessDenied"}}, CA_HEADER)
    assert classified.severity is Severity.RECONNECT
    assert classified.error_code == "conditional_access"
    assert classified.reason == CONDITIONAL_ACCESS_REASON
    error = error_for(403, {"error": {"code": "AccessDenied"}}, {}, CA_HEADER)
    assert isinstance(error, AccessTokenRejected) and error.challenge is not None


def test_graph_403_insufficient_claims_in_the_body_only() -> None:
    body = {"error": {"code": "Forbidden", "innerError": {"code": "insufficient_claims"}}}
    assert classify_graph_response(403, body).error_code == "conditional_access"


def test_a_plain_403_stays_permanent() -> None:
    classified = classify_graph_response(403, {"error": {"code": "ErrorAccessDenied"}})
    assert classified.severity is Severity.PERMANENT and classified.error_code == "ErrorAccessDenied"


@pytest.mark.parametrize("code", [53003, 53000, 53001])
def test_token_endpoint_blocked_by_policy(code: int) -> None:
    classified = classify_identity_error(400, {"error": "invalid_grant", "error_codes": [code]})
    assert classified.severity is Severity.RECONNECT
    assert classified.error_code == f"AADSTS{code}"
    assert classified.reason == CONDITIONAL_ACCESS_REASON

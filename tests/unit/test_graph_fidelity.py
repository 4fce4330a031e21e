"""Graph fidelity (issue 11): the pure parts. Times with offsets, nested error codes, $batch steps,
claims challenges, Conditional Access, the reauthorizationRequired catch-up decision."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.core.adapters.config import Settings
from services.core.adapters.graph.claims import (
    CP1_CLAIMS,
    asks_for_claims,
    parse_claims_challenge,
    token_request_claims,
)
from services.core.adapters.graph.client import error_for, read_batch_round
from services.core.adapters.graph.errors import (
    CONDITIONAL_ACCESS_REASON,
    MAX_INNER_DEPTH,
    AccessTokenRejected,
    Classified,
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
from services.core.adapters.graph.identity import IdentityClient
from services.core.adapters.graph.times import parse_graph_time, parse_graph_time_or_none
from services.core.application.connections import NotConnected, TokenService
from services.renewer.lifecycle import CLOCK_SKEW, SubscriptionState, may_have_missed
from services.renewer.subscriptions import PATCH_TOKEN_MIN_LIFETIME, token_fresh_enough

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


# --- claims challenges -------------------------------------------------------------------------------



NBF = {"access_token": {"nbf": {"essential": True, "value": "1604106651"}}}


def _b64(value: object, *, urlsafe: bool = False, pad: bool = True) -> str:
    raw = json.dumps(value).encode()
    text = (base64.urlsafe_b64encode(raw) if urlsafe else base64.b64encode(raw)).decode()
    return text if pad else text.rstrip("=")


def test_microsoft_example_challenge() -> None:
    header = ('Bearer realm="", authorization_uri="https://login.microsoftonline.com/common/oauth2/authorize", '
              f'client_id="00000003-0000-0000-c000-000000000000", error="insufficient_claims", claims="{_b64(NBF)}"')
    challenge = parse_claims_challenge(header)
    assert challenge is not None
    assert challenge.scheme == "Bearer" and challenge.claims == NBF
    assert challenge.params["client_id"] == "00000003-0000-0000-c000-000000000000"


@pytest.mark.parametrize("claims", [_b64(NBF, urlsafe=True, pad=False), _b64(NBF, pad=False)])
def test_base64_forms(claims: str) -> None:
    challenge = parse_claims_challenge(f'Bearer error="insufficient_claims", claims="{claims}"')
    assert challenge is not None and challenge.claims == NBF


def test_unquoted_values_and_any_case() -> None:
    challenge = parse_claims_challenge(f"bearer ERROR=insufficient_claims, Claims={_b64(NBF)}")
    assert challenge is not None and challenge.claims == NBF


def test_quoted_values_with_commas_and_escapes() -> None:
    header = (r'Bearer realm="a, \"quoted\" realm", error_description="x, y", '
              f'error="insufficient_claims", claims="{_b64(NBF)}"')
    challenge = parse_claims_challenge(header)
    assert challenge is not None and challenge.params["realm"] == 'a, "quoted" realm'


def test_several_challenges_the_claims_one_is_found() -> None:
    header = (f'PoP realm="", nonce="abc", Bearer realm="", error="invalid_token", '
              f'Bearer authorization_uri="https://login", error="insufficient_claims", claims="{_b64(NBF)}"')
    challenge = parse_claims_challenge(header)
    assert challenge is not None and challenge.scheme == "Bearer" and challenge.claims == NBF


def test_parameters_do_not_leak_between_challenges() -> None:
    # The error belongs to the first challenge, the claims to the second: neither is a claims challenge.
    header = f'Bearer error="insufficient_claims", Basic claims="{_b64(NBF)}"'
    assert parse_claims_challenge(header) is None
    assert asks_for_claims(header)


@pytest.mark.parametrize("header", [
    None, "", "Bearer", 'Bearer realm=""', 'Bearer error="invalid_token"',
    f'Bearer error="invalid_token", claims="{_b64(NBF)}"',
    'Bearer error="insufficient_claims"',  # no claims
    'Bearer error="insufficient_claims", claims="%%%not base64%%%"',
    'Bearer error="insufficient_claims", claims="bm90IGpzb24="',  # "not json"
    f'Bearer error="insufficient_claims", claims="{_b64([1, 2])}"',  # JSON, not an object
    f'Bearer error="insufficient_claims", claims="{_b64({})}"',
    'Bearer error="insufficient_claims", claims="' + "A" * 9000 + '"',  # oversized
    '"unterminated',
])
def test_not_a_claims_challenge(header: str | None) -> None:
    assert parse_claims_challenge(header) is None


def test_raw_json_claims_are_read() -> None:
    header = 'Bearer error="insufficient_claims", claims="{\\"access_token\\":{\\"acrs\\":{\\"values\\":[\\"c1\\"]}}}"'
    challenge = parse_claims_challenge(header)
    assert challenge is not None and challenge.claims == {"access_token": {"acrs": {"values": ["c1"]}}}


def test_token_requests_declare_cp1() -> None:
    assert json.loads(token_request_claims()) == {"access_token": {"xms_cc": {"values": ["cp1"]}}}
    assert json.loads(token_request_claims(None)) == CP1_CLAIMS


def test_challenge_claims_merged_with_cp1() -> None:
    merged = json.loads(token_request_claims(NBF))
    assert merged == {"access_token": {"nbf": {"essential": True, "value": "1604106651"},
                                       "xms_cc": {"values": ["cp1"]}}}
    both = json.loads(token_request_claims({"access_token": {"xms_cc": {"values": ["cp2"]}},
                                            "id_token": {"auth_time": {"essential": True}}}))
    assert both["access_token"]["xms_cc"]["values"] == ["cp2", "cp1"]
    assert both["id_token"] == {"auth_time": {"essential": True}}


def test_merge_does_not_mutate_the_challenge() -> None:
    challenge = {"access_token": {"xms_cc": {"values": ["cp2"]}}}
    token_request_claims(challenge)
    assert challenge == {"access_token": {"xms_cc": {"values": ["cp2"]}}}


# --- reauthorizationRequired --------------------------------------------------------------------------


NOW = datetime(2026, 1, 1, 12, tzinfo=UTC)


def _state(*, expires_in: timedelta = timedelta(days=2), authorized_for: timedelta | None = timedelta(minutes=40),
           failed: bool = False) -> SubscriptionState:
    return SubscriptionState(expires_at=NOW + expires_in,
                             authorized_until=None if authorized_for is None else NOW + authorized_for,
                             reauth_failed_at=NOW - timedelta(minutes=5) if failed else None)


def test_a_reminder_answered_in_time_needs_no_catch_up() -> None:
    assert not may_have_missed(_state(), NOW)


def test_catch_up_when_the_authorization_lapsed() -> None:
    assert may_have_missed(_state(authorized_for=-timedelta(minutes=3)), NOW)
    assert may_have_missed(_state(authorized_for=timedelta(0)), NOW)
    assert may_have_missed(_state(authorized_for=CLOCK_SKEW / 2), NOW)  # within clock skew
    assert not may_have_missed(_state(authorized_for=CLOCK_SKEW * 2), NOW)


def test_catch_up_when_the_authorization_is_unknown() -> None:
    assert may_have_missed(_state(authorized_for=None), NOW)


def test_catch_up_after_a_failed_patch() -> None:
    assert may_have_missed(_state(failed=True), NOW)


def test_catch_up_when_the_subscription_itself_expired() -> None:
    assert may_have_missed(_state(expires_in=-timedelta(seconds=1)), NOW)


@given(expires_in=st.integers(-10_000, 10_000), authorized_for=st.one_of(st.none(), st.integers(-10_000, 10_000)),
       failed=st.booleans())
def test_missed_exactly_when_delivery_may_have_paused(expires_in: int, authorized_for: int | None,
                                                    failed: bool) -> None:
    state = _state(expires_in=timedelta(seconds=expires_in), failed=failed,
                   authorized_for=None if authorized_for is None else timedelta(seconds=authorized_for))
    paused = (expires_in <= 0 or authorized_for is None or authorized_for <= CLOCK_SKEW.total_seconds()
              or failed)
    assert may_have_missed(state, NOW) is paused


def test_patch_token_must_outlive_the_current_authorization() -> None:
    long = NOW + timedelta(minutes=70)
    assert token_fresh_enough(long, None, NOW)
    assert token_fresh_enough(long, NOW + timedelta(minutes=20), NOW)
    assert not token_fresh_enough(long, long, NOW)  # the token the subscription already holds: refresh first
    assert not token_fresh_enough(NOW + PATCH_TOKEN_MIN_LIFETIME - timedelta(seconds=1), None, NOW)


# --- the token service answers a claims challenge once; identity declares cp1 ------------------------



EXPIRY = NOW + timedelta(hours=1)


class _Tokens(TokenService):
    """TokenService with the database replaced: records what the call path asked for."""

    def __init__(self) -> None:
        self.asked: list[tuple[bool, Mapping[str, Any] | None]] = []
        self.failed: list[GraphError] = []
        self._cache = {}

    async def access_token_with_expiry(self, connection_id: str, *, force_refresh: bool = False,
                                       claims: Mapping[str, Any] | None = None,
                                       accept: Callable[[datetime], bool] | None = None) -> tuple[str, datetime]:
        self.asked.append((force_refresh, claims))
        expires_at = EXPIRY + timedelta(minutes=len(self.asked))
        if accept is not None and not accept(expires_at):  # what the real one does: refresh once
            self.asked.append((True, claims))
            expires_at = EXPIRY + timedelta(minutes=len(self.asked))
        return f"token{len(self.asked)}", expires_at

    async def mark_failed(self, connection_id: str, failure: GraphError) -> None:
        self.failed.append(failure)

    async def out_of_scope(self, connection_id: str) -> bool:
        return False  # a delegated mailbox: an access-policy refusal is only a tenant-mode mailbox's status


def _rejected(challenge_header: str | None, status: int = 401) -> AccessTokenRejected:
    error = error_for(status, {"error": {"code": "InvalidAuthenticationToken"}}, {}, challenge_header)
    assert isinstance(error, AccessTokenRejected)
    return error


CHALLENGE = f'Bearer realm="", error="insufficient_claims", claims="{_b64(NBF)}"'


async def test_a_claims_challenge_refreshes_once_with_its_claims() -> None:
    tokens = _Tokens()
    seen: list[str] = []

    async def call(token: str) -> str:
        seen.append(token)
        if token == "token1":
            raise _rejected(CHALLENGE)
        return "ok"

    assert await tokens.call("c", call) == "ok"
    assert seen == ["token1", "token2"]
    assert tokens.asked == [(False, None), (True, NBF)]
    assert not tokens.failed


async def test_a_plain_401_refreshes_without_claims() -> None:
    tokens = _Tokens()

    async def call(token: str) -> str:
        if token == "token1":
            raise _rejected(None)
        return "ok"

    assert await tokens.call("c", call) == "ok"
    assert tokens.asked == [(False, None), (True, None)]


async def test_rejected_again_after_the_refresh_marks_the_mailbox_once() -> None:
    tokens = _Tokens()

    async def call(token: str) -> str:
        raise _rejected(CHALLENGE, status=403)  # Conditional Access keeps refusing

    with pytest.raises(NotConnected) as caught:
        await tokens.call("c", call)
    assert caught.value.status == "reconnect_required"
    assert len(tokens.failed) == 1
    assert tokens.failed[0].classified.error_code == "conditional_access"
    assert tokens.failed[0].classified.reason == CONDITIONAL_ACCESS_REASON
    assert tokens.asked == [(False, None), (True, NBF)]


async def test_a_stale_token_is_refreshed_before_the_call() -> None:
    tokens = _Tokens()
    used: list[tuple[str, datetime]] = []

    async def call(token: str, expires_at: datetime) -> None:
        used.append((token, expires_at))

    await tokens.call_with_expiry("c", call, fresh=lambda expires_at: expires_at > EXPIRY + timedelta(minutes=1))
    assert tokens.asked == [(False, None), (True, None)]
    assert used == [("token2", EXPIRY + timedelta(minutes=2))]


async def test_other_graph_errors_pass_through_without_a_refresh() -> None:
    tokens = _Tokens()

    async def call(token: str) -> None:
        raise GraphError(Classified(Severity.PERMANENT, "ErrorAccessDenied", "x"), 403)

    with pytest.raises(GraphError):
        await tokens.call("c", call)
    assert tokens.asked == [(False, None)] and not tokens.failed


class _Response:
    status = 200

    async def json(self, content_type: str | None = None) -> dict[str, Any]:
        return {"access_token": "a", "refresh_token": "rotated", "expires_in": 3600, "scope": "Mail.Read"}

    async def __aenter__(self) -> _Response:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None


class _Session:
    def __init__(self) -> None:
        self.forms: list[dict[str, str]] = []

    def post(self, url: str, *, data: dict[str, str], timeout: object) -> _Response:
        self.forms.append(data)
        return _Response()


async def test_every_token_request_declares_cp1_and_challenge_claims_are_merged() -> None:
    session = _Session()
    identity = IdentityClient(session, Settings(kafka_bootstrap="k", database_url="d"))  # type: ignore[arg-type]
    await identity.exchange_code("code", "verifier", "https://app/callback")
    plain = await identity.refresh("old", "tenant")
    await identity.refresh("old", "tenant", NBF)
    claims = [json.loads(form["claims"]) for form in session.forms]
    assert claims[0] == claims[1] == {"access_token": {"xms_cc": {"values": ["cp1"]}}}
    assert claims[2]["access_token"]["nbf"] == NBF["access_token"]["nbf"]
    assert claims[2]["access_token"]["xms_cc"] == {"values": ["cp1"]}
    assert plain.refresh_token == "rotated"  # the rotated refresh token is what gets stored


async def test_a_cached_token_the_caller_refuses_is_refreshed_once() -> None:
    tokens = TokenService.__new__(TokenService)
    later = datetime.now(UTC) + timedelta(hours=1)
    tokens._cache = {"c": ("cached", later)}
    fetched: list[tuple[bool, object]] = []

    async def from_db(connection_id: str, force_refresh: bool, claims: object = None,
                      accept: object = None) -> tuple[str, datetime]:
        fetched.append((force_refresh, accept))
        return "refreshed", later + timedelta(minutes=1)

    tokens._from_db = from_db  # type: ignore[method-assign]
    assert await tokens.access_token_with_expiry("c", accept=lambda _: True) == ("cached", later)
    assert not fetched

    def refuse(_: datetime) -> bool:
        return False

    assert (await tokens.access_token_with_expiry("c", accept=refuse))[0] == "refreshed"
    assert fetched == [(False, refuse)]  # the store decides with the same rule, refreshing when it refuses too

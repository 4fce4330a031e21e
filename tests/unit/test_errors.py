import pytest

from services.core.adapters.graph.errors import (
    Severity,
    classify_authorize_error,
    classify_graph_response,
    classify_identity_error,
    retry_after_seconds,
)


def body(error, *codes, description="AADSTS00000: words that must not matter"):
    return {"error": error, "error_description": description, "error_codes": list(codes)}


@pytest.mark.parametrize(("error", "code", "severity"), [
    ("invalid_grant", 50173, Severity.RECONNECT),
    ("invalid_grant", 70008, Severity.RECONNECT),
    ("invalid_grant", 700082, Severity.RECONNECT),
    ("interaction_required", 50076, Severity.RECONNECT),
    ("interaction_required", 50079, Severity.RECONNECT),
    ("interaction_required", 50078, Severity.RECONNECT),
    ("interaction_required", 70043, Severity.RECONNECT),
    ("invalid_grant", 65001, Severity.CONSENT),
    ("access_denied", 65004, Severity.CONSENT),
    ("invalid_grant", 90094, Severity.CONSENT),
    ("invalid_client", 7000215, Severity.PERMANENT),
])
def test_identity_errors_by_code(error, code, severity):
    classified = classify_identity_error(400, body(error, code))
    assert classified.severity is severity
    assert classified.error_code == f"AADSTS{code}"
    assert classified.reason


@pytest.mark.parametrize("status", [429, 500, 502, 503, 504])
def test_throttling_and_outages_are_transient(status):
    assert classify_identity_error(status, body("invalid_grant", 50173)).severity is Severity.TRANSIENT


def test_network_failure_is_transient():
    assert classify_identity_error(None, None).severity is Severity.TRANSIENT


def test_description_text_is_never_the_decision():
    misleading = body("invalid_grant", 50173, description="AADSTS90094: admin consent required")
    assert classify_identity_error(400, misleading).severity is Severity.RECONNECT


def test_authorize_redirect_uses_the_aadsts_number():
    assert classify_authorize_error("consent_required", "AADSTS90094: Admin needed").severity is Severity.CONSENT
    assert classify_authorize_error("access_denied", "AADSTS65004: declined").severity is Severity.CONSENT


@pytest.mark.parametrize(("raw", "seconds"), [("3", 3.0), ("0.25", 0.25), ("nonsense", None), (None, None)])
def test_retry_after(raw, seconds):
    headers = {} if raw is None else {"Retry-After": raw}
    assert retry_after_seconds(headers) == seconds


def test_graph_statuses():
    assert classify_graph_response(429, None).severity is Severity.TRANSIENT
    assert classify_graph_response(503, None).severity is Severity.TRANSIENT
    assert classify_graph_response(401, {"error": {"code": "InvalidAuthenticationToken"}}).error_code == \
        "InvalidAuthenticationToken"
    assert classify_graph_response(400, None).severity is Severity.PERMANENT

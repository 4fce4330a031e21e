"""Pure parts of the tenant connection's round-two additions: the access-policy refusal, the
tenant_connection.status event built from an outbox row, and what the pages say."""

from __future__ import annotations

import datetime as dt
import uuid

import pytest

from services.core.adapters.graph.errors import classify_graph_response
from services.core.adapters.tenant_rules import outside_access_policy
from services.core.application.tenant_status import status_event
from services.core.domain import event_types as et
from services.subscriber.page_words import TENANT_STATUS_WORDS, tenant_todo, tenant_words_to_send
from services.subscriber.tenant_api import valid_tenant_id

POLICY_BODY = {"error": {"code": "ErrorAccessDenied", "message": "Access to OData is disabled: [RAOP] : Blocked "
                         "by tenant configured AppOnly AccessPolicy settings."}}


def test_a_403_access_denied_is_the_access_policy_and_nothing_else_is() -> None:
    classified = classify_graph_response(403, POLICY_BODY)
    assert outside_access_policy(403, classified.error_code)
    assert not outside_access_policy(401, classified.error_code)
    assert not outside_access_policy(403, classify_graph_response(403, {"error": {"code": "Forbidden"}}).error_code)
    # Conditional Access's 403 claims challenge stays a reconnect, never out_of_scope.
    challenge = classify_graph_response(403, {"error": {"code": "insufficient_claims"}})
    assert not outside_access_policy(403, challenge.error_code)
    assert not outside_access_policy(None, "ErrorAccessDenied")


def test_the_tenant_status_event_is_the_outbox_row_with_its_stable_id() -> None:
    row = {"tenant_connection_id": uuid.uuid4(), "account_id": "a1", "tenant_id": "t1", "status": "consent_revoked",
           "reason": "withdrawn", "error_code": "AADSTS700016", "event_id": uuid.uuid4(),
           "created_at": dt.datetime(2026, 11, 29, 18, 0, tzinfo=dt.UTC)}
    value = status_event(row)
    assert value["type"] == "tenant_connection.status" and value["event_id"] == str(row["event_id"])
    assert value["occurred_at"] == "2026-11-29T18:00:00Z" and value["tenant_connection_id"] == str(
        row["tenant_connection_id"])
    parsed = et.STATUS_EVENTS.parse(value)
    assert isinstance(parsed, et.TenantConnectionStatusChanged) and parsed.status == "consent_revoked"
    assert status_event(row) == value  # a republish is the same event


@pytest.mark.parametrize(("raw", "want"), [
    (" 1d1a820b-bd29-42d8-b6c1-ea6e4a52c20d ", "1d1a820b-bd29-42d8-b6c1-ea6e4a52c20d"),
    ("contoso.com", "contoso.com"), ("common", None), ("Organizations", None), ("consumers", None), ("", None),
    ("<script>", None), ("a" * 101, None), (None, None), (7, None), ("contoso.com/../x", None),
])
def test_a_tenant_id_names_one_organisation(raw: object, want: str | None) -> None:
    assert valid_tenant_id(raw) == want


def test_the_pages_say_what_each_tenant_state_needs() -> None:
    assert set(TENANT_STATUS_WORDS) == {"pending_consent", "connected", "consent_revoked", "disconnected"}
    assert tenant_todo("connected", None) is None
    assert "application access policy" in (tenant_todo("consent_required", "out_of_scope") or "")
    assert "consent again" in (tenant_todo("consent_required", "AADSTS700016") or "")
    words = tenant_words_to_send("https://login.example/t/v2.0/adminconsent?state=s.m", "t")
    assert "https://login.example/t/v2.0/adminconsent?state=s.m" in words and "once" in words

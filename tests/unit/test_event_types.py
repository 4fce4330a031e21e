"""The event models (services/core/domain/event_types.py): docs/asyncapi.yaml says exactly what they say, records
decode into them with events.decode's guarantees and the DLQ's wording, unknown types are skipped, and
the msgspec fast path of events.decode gives the checked path's answer for every input."""

from __future__ import annotations

import codecs
import json
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.core.domain import event_types as et
from services.core.domain import events
from tests.support.asyncapi import DOC, validate

ENVELOPE = ("type", "version", "event_id", "occurred_at")
UUID = "6f1c6d1e-0000-4000-8000-000000000001"


# --- docs/asyncapi.yaml against the models ---------------------------------------------------------------

def _resolve(schema: dict[str, Any]) -> dict[str, Any]:
    ref = schema.get("$ref")
    return DOC["components"]["schemas"][ref.rsplit("/", 1)[-1]] if ref else schema


def _doc_payload(event_type: str) -> tuple[dict[str, Any], set[str]]:
    """The documented properties and required fields of a type, its allOf parts merged."""
    message = next(m for m in DOC["components"]["messages"].values() if m["name"] == event_type)
    parts = [_resolve(message["payload"])]
    properties: dict[str, Any] = {}
    required: set[str] = set()
    while parts:
        part = _resolve(parts.pop(0))
        parts += part.get("allOf", [])
        properties |= part.get("properties", {})
        required |= set(part.get("required", []))
    return properties, required


def _kinds(schema: dict[str, Any], defs: dict[str, Any]) -> tuple[frozenset[str], frozenset[Any]]:
    """A property's JSON types and enum values, from either side (doc or msgspec.json.schema)."""
    schema = _resolve(schema) if "$ref" in schema and "#/components/" in schema["$ref"] else schema
    types: set[str] = set()
    values: set[Any] = set()
    for option in schema.get("anyOf", [schema]):
        if "$ref" in option:  # msgspec's own $defs: a domain enum, or a nested Struct (Participant)
            option = defs[option["$ref"].rsplit("/", 1)[-1]]
            if option.get("type") == "object":
                types.add("object")
                continue
        if "enum" in option or "const" in option:
            found = option.get("enum", [option.get("const")])
            values |= {v for v in found if v is not None}
            types |= {"null" if v is None else "integer" if isinstance(v, int) else "string" for v in found}
        kind = option.get("type")
        types |= set(kind) if isinstance(kind, list) else {kind} if kind else set()
    return frozenset(types), frozenset(values)


TYPES = [(topic, kind, cls) for topic in et.TOPIC_EVENTS for kind, cls in topic.types.items()]


@pytest.mark.parametrize(("topic", "kind", "cls"), TYPES, ids=[k for _, k, _ in TYPES])
def test_the_asyncapi_payload_of_each_type_is_its_model(topic: et.TopicEvents[Any], kind: str,
                                                        cls: type[et.Event]) -> None:
    (ref,), components = msgspec.json.schema_components([cls], ref_template="#/$defs/{name}")
    model = components[ref["$ref"].rsplit("/", 1)[-1]]
    documented, required = _doc_payload(kind)
    assert set(documented) == set(model["properties"]), f"{kind}: fields differ from {cls.__name__}"
    # The envelope is always written (producers get it by default); payload fields with a default are the
    # ones a producer may leave out (round two's, and the lists consumers default to []).
    assert required == set(model["required"]) | set(ENVELOPE), f"{kind}: required fields differ"
    for name, schema in model["properties"].items():
        if name in ("type",):
            continue
        doc_types, doc_values = _kinds(documented[name], components)
        model_types, model_values = _kinds(schema, components)
        assert doc_types == model_types, f"{kind}.{name}: types differ"
        if model_values:  # `version` is documented as const 1; consumers take any integer
            assert doc_values == model_values, f"{kind}.{name}: values differ"
    assert documented["type"] == {"const": kind}


def test_every_topic_is_documented_with_exactly_its_types() -> None:
    channels = {c["address"]: c for c in DOC["channels"].values()}
    for topic in et.TOPIC_EVENTS:
        names = {DOC["components"]["messages"][ref["$ref"].rsplit("/", 1)[-1]]["name"]
                 for ref in channels[topic.topic]["messages"].values()}
        assert names == set(topic.types), topic.topic
    assert {t.name for t in events.TOPICS} | {"{topic}.dlq"} == set(channels)


def test_the_participant_schema_is_the_model() -> None:
    documented = DOC["components"]["schemas"]["participant"]
    (_, components) = msgspec.json.schema_components([et.Participant])
    model = components["Participant"]
    assert set(documented["properties"]) == set(model["properties"])
    assert set(documented["required"]) == set(model["required"])
    assert _kinds(documented["properties"]["role"], components) == _kinds(model["properties"]["role"], components)


# --- producing ------------------------------------------------------------------------------------------------

def _engagement(**extra: Any) -> et.EngagementCreated:
    return et.EngagementCreated(
        engagement_id=UUID, account_id="a", contact_ids=["c"], client_ids=[], direction="inbound",
        occurred_at="2026-11-29T10:00:00+00:00", internet_message_id="<m@x.example>", conversation_id="conv",
        participants=[et.Participant(address="ana@x.example", name="Ana", role="from")],
        mailbox_user_ids=["u"], mailbox_addresses=["bob@y.example"], source="webhook",
        event_id=events.stable_event_id("engagement.created", UUID), **extra)


def test_a_produced_event_is_the_documented_json_with_absent_fields_left_out() -> None:
    event = _engagement(subject="Hi")
    value = et.to_value(event)
    assert json.loads(et.encode(event)) == value == json.loads(events.encode(value))
    assert next(iter(value)) == "type" and value["type"] == "engagement.created" and value["version"] == 1
    assert "preview" not in value and "send_id" not in value and value["occurred_at"] == "2026-11-29T10:00:00+00:00"
    validate(value)
    metadata = et.to_value(_engagement(send_id=UUID))
    assert "subject" not in metadata and metadata["send_id"] == UUID
    validate(metadata)


def test_an_event_id_is_new_per_event_unless_given() -> None:
    a, b = et.UserDeleted(user_id="u", account_id="a"), et.UserDeleted(user_id="u", account_id="a")
    assert a.event_id != b.event_id and a.occurred_at.endswith("Z")
    assert _engagement().event_id == _engagement().event_id


# --- consuming ------------------------------------------------------------------------------------------------

def _raw(value: dict[str, Any]) -> bytes:
    return json.dumps(value).encode()


USER = {"type": "user.upserted", "user_id": "u1", "account_id": "a1", "email": "bob@y.example"}


def test_a_record_becomes_its_model_with_round_two_fields_defaulted_and_unknown_fields_ignored() -> None:
    for event in (et.DIRECTORY_EVENTS.parse({**USER, "shoe_size": [44]}),
                  et.DIRECTORY_EVENTS.decode(_raw({**USER, "shoe_size": [44]}))):
        assert isinstance(event, et.UserUpserted)
        assert (event.user_id, event.aliases, event.never_log, event.role) == ("u1", [], [], et.UNSET)
    account = et.DIRECTORY_EVENTS.decode(_raw({"type": "account.upserted", "account_id": "a1"}))
    assert isinstance(account, et.AccountUpserted)
    assert (account.domain_matching, account.exclude_automated, account.capture) == (False, True, et.UNSET)


@pytest.mark.parametrize("kind", ["user.renamed", "", "\u202eevil", "engagement.created"])
def test_a_type_the_topic_does_not_know_is_skipped_not_refused(kind: str) -> None:
    value = {**USER, "type": kind}
    assert et.DIRECTORY_EVENTS.parse(value) is None
    assert et.DIRECTORY_EVENTS.decode(_raw(value)) is None


@pytest.mark.parametrize(("value", "reason"), [
    ({**USER, "role": "owner"}, "role must be one of member, admin (got 'owner')"),
    ({**USER, "user_id": ""}, "user_id must be a non-empty string"),
    ({**USER, "user_id": 7}, "user_id must be a string, not an integer"),
    ({"type": "user.upserted", "account_id": "a"}, "user_id is required"),
    ({**USER, "aliases": ["a@x.example", 3]}, "aliases[1] must be a string, not an integer"),
    ({**USER, "never_log": None}, "never_log must be a list, not null"),
    ({"type": "account.upserted", "account_id": "a", "capture": "everything"},
     "capture must be one of metadata, subject, preview (got 'everything')"),
    ({"type": "account.upserted", "account_id": "a", "exclude_automated": "yes"},
     "exclude_automated must be a boolean, not a string"),
    ({"type": "contact.upserted", "account_id": "a", "contact_id": "c", "client_id": 5},
     "client_id must be a string or null, not an integer"),
])
def test_a_malformed_record_is_a_bad_event_naming_its_field(value: dict[str, Any], reason: str) -> None:
    with pytest.raises(events.BadEvent) as parsed:
        et.DIRECTORY_EVENTS.parse(value)
    with pytest.raises(events.BadEvent) as decoded:
        et.DIRECTORY_EVENTS.decode(_raw(value))
    assert str(parsed.value) == str(decoded.value) == reason


def test_a_nested_field_and_a_lifecycle_event_are_named_too() -> None:
    created = et.to_value(_engagement())
    created["participants"] = [{"address": "a@x.example", "role": "boss"}]
    with pytest.raises(events.BadEvent, match=r"participants\[0\]\.role: Invalid enum value 'boss'"):
        et.ENGAGEMENT_EVENTS.decode(_raw(created))
    created["participants"] = ["a@x.example"]
    with pytest.raises(events.BadEvent, match=r"participants\[0\] must be an object, not a string"):
        et.ENGAGEMENT_EVENTS.decode(_raw(created))
    with pytest.raises(events.BadEvent, match="lifecycle_event must be one of reauthorizationRequired"):
        et.LIFECYCLE_EVENTS.decode(_raw({"type": "subscription.lifecycle", "connection_id": UUID,
                                         "subscription_id": "s", "lifecycle_event": "bored"}))


HOSTILE = [
    None, b"", b"[" * 5000, b'{"type":"user.upserted","v":' + b"[" * 100_000 + b"]" * 100_000 + b"}",
    b'{"type":"user.upserted","user_id":"\\u0000","account_id":"a","email":"e"}',
    b'{"type":"user.upserted","user_id":"u","account_id":"a","email":"e","\\ud800":1}',
    b'{"type":"user.upserted","user_id":"u\x00","account_id":"a","email":"e"}',
    b'{"type":"user.upserted","user_id":"\xed\xa0\x80","account_id":"a","email":"e"}',
    codecs.BOM_UTF8 + _raw(USER), b"\xff\xfe not utf-8", b'{"type":"user.upserted","n":NaN}', b"[1]", b'"x"',
    b'{"type":7}', b'{"no_type":1}', _raw(USER) + b" ", _raw(USER) + b"x",
    b'{"type":"user.upserted","user_id":"u","account_id":"a","email":"e","n":1' + b"0" * 5000 + b"}",
    b'{"type":"x","pad":"' + b"x" * events.MAX_RECORD_BYTES + b'"}',
    _raw(USER)[:-1] + b',"deep":' + b"[" * 63 + b"1" + b"]" * 63 + b"}",  # 64 levels: within the limit
    _raw(USER)[:-1] + b',"deep":' + b"[" * 64 + b"1" + b"]" * 64 + b"}",
]


def _outcome(fn: Any, raw: Any, given: Any = None) -> Any:
    """("refused", reason) or ("accepted", value), without the envelope fields the model defaulted afresh."""
    try:
        result = fn(raw)
    except events.BadEvent as exc:
        return ("refused", str(exc))
    if not isinstance(result, et.Event):
        return ("accepted", result)
    value = msgspec.to_builtins(result)
    for key in ("event_id", "occurred_at"):
        if not isinstance(given, dict) or key not in given:
            value.pop(key)
    return ("accepted", value)


@pytest.mark.parametrize("raw", HOSTILE, ids=range(len(HOSTILE)))
def test_decoding_bytes_gives_the_answer_of_the_dict_path_for_hostile_records(raw: bytes | None) -> None:
    slow = _outcome(lambda r: et.DIRECTORY_EVENTS.parse(events.decode(r)), raw)
    assert _outcome(et.DIRECTORY_EVENTS.decode, raw) == slow


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=30)
records = st.one_of(
    st.fixed_dictionaries({"type": st.sampled_from([*sorted(et.DIRECTORY_EVENTS.types), "other"])},
                          optional={k: json_values | st.text(max_size=12) for k in
                                    ("user_id", "account_id", "email", "contact_id", "client_id", "role", "capture",
                                     "name", "domain_matching", "exclude_automated")}
                          | {k: st.lists(st.text(max_size=12), max_size=3) | json_values
                             for k in ("aliases", "never_log", "emails", "domains", "entries")}),
    json_values)


@settings(max_examples=1500, deadline=None)
@given(records, st.booleans())
def test_the_fast_paths_agree_with_the_checked_path(value: Any, ascii_only: bool) -> None:
    raw = json.dumps(value, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")
    checked = _outcome(events._decode_checked, raw)
    assert _outcome(events.decode, raw) == checked
    via_dict = _outcome(lambda r: et.DIRECTORY_EVENTS.parse(events.decode(r)), raw, value)
    assert _outcome(et.DIRECTORY_EVENTS.decode, raw, value) == via_dict


# --- the consumers: an unknown type changes nothing, a malformed record is refused before any I/O ---------

async def test_the_directory_and_lifecycle_consumers_skip_unknown_types_and_refuse_malformed_records() -> None:
    from services.matcher.directory import apply_directory_event
    from services.renewer.lifecycle import handle_lifecycle

    # No connection, pool or Graph is given: reaching any of them would fail these.
    skipped = await apply_directory_event(None, {"type": "user.renamed", "account_id": "a1"})  # type: ignore[arg-type]
    assert (skipped.account_id, skipped.addresses, skipped.domains, skipped.deleted_contact) == ("a1", frozenset(),
                                                                                              frozenset(), None)
    with pytest.raises(events.BadEvent, match="role must be one of member, admin"):
        await apply_directory_event(None, {**USER, "role": "owner"})  # type: ignore[arg-type]
    assert await handle_lifecycle({"type": "subscription.renamed"}, None) is None  # type: ignore[arg-type]
    with pytest.raises(events.BadEvent, match="lifecycle_event must be one of"):
        await handle_lifecycle({"type": "subscription.lifecycle", "connection_id": UUID, "subscription_id": "s",
                                "lifecycle_event": "bored"}, None)  # type: ignore[arg-type]

"""Typed events (msgspec) against the dict path they replaced: decode + validate + encode of a typical
engagement.created and user.upserted, N iterations each, both in this process (pure CPU, no stack).

    .venv/bin/python -m tests.bench.event_codec [iterations]

Dict path (as it was): events.decode's checked path (json_limits' byte scan, json.loads, the NUL/surrogate
walk) + require_str/str_list on every field a consumer reads + events.encode(events.envelope(...)).
msgspec path: TopicEvents.decode (events.decode, whose common case msgspec now parses, then msgspec.convert
into the model) + event_types.encode(Model(...)). "Via publisher" is what producers do while the Publisher
takes dicts: events.encode(to_value(Model(...))). "dict+shortcut" is the dict path with the bracket-count
shortcut alone: what is left of the difference is msgspec's."""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

from services.core.domain import event_types as et
from services.core.domain import events, json_limits
from services.core.domain.events import require_str, str_list

EID = "6f1c6d1e-0000-4000-8000-0000000000e1"


def _engagement_payload() -> dict[str, Any]:
    return {
        "engagement_id": EID, "account_id": "acct-1", "contact_ids": ["contact-1", "contact-2"],
        "client_ids": ["client-1"], "direction": "inbound", "subject": "Quarterly numbers — draft 3",
        "occurred_at": "2026-11-29T10:00:00+00:00",
        "internet_message_id": "<CAF=3xyz.1234567890@mail.buyer.example>", "conversation_id": "AAQkAGI2TG93AAA=",
        "participants": [{"address": "ana@buyer.example", "name": "Ana Díaz", "role": "from"},
                         {"address": "bob@northwind.example", "name": "Bob", "role": "to"},
                         {"address": "carol@buyer.example", "name": "Carol", "role": "cc"}],
        "mailbox_user_ids": ["user-7"], "mailbox_addresses": ["bob@northwind.example"], "source": "webhook"}


def _user_payload() -> dict[str, Any]:
    return {"user_id": "user-7", "account_id": "acct-1", "email": "bob@northwind.example",
            "aliases": ["robert@northwind.example", "b@northwind.example"], "never_log": ["@family.example"],
            "role": "member"}


# --- the dict path (as it was) -----------------------------------------------------------------------------

def dict_engagement(raw: bytes) -> bytes:
    value = events._decode_checked(raw)
    for key in ("engagement_id", "account_id", "direction", "occurred_at", "internet_message_id", "source"):
        require_str(value, key)
    for key in ("contact_ids", "client_ids", "mailbox_user_ids", "mailbox_addresses"):
        str_list(value, key)
    for p in value["participants"]:
        require_str(p, "address")
        require_str(p, "role")
    payload = _engagement_payload()
    return events.encode(events.envelope("engagement.created", payload, event_id=EID))


def dict_user(raw: bytes) -> bytes:
    value = events._decode_checked(raw)
    for key in ("user_id", "account_id", "email"):
        require_str(value, key)
    for key in ("aliases", "never_log"):
        str_list(value, key)
    if value.get("role", "member") not in ("member", "admin", None):
        raise events.BadEvent("role")
    return events.encode(events.envelope("user.upserted", _user_payload()))


# --- msgspec --------------------------------------------------------------------------------------------

def _engagement_struct() -> et.EngagementCreated:
    p = _engagement_payload()
    return et.EngagementCreated(
        event_id=EID, engagement_id=p["engagement_id"], account_id=p["account_id"], contact_ids=p["contact_ids"],
        client_ids=p["client_ids"], direction="inbound", subject=p["subject"], occurred_at=p["occurred_at"],
        internet_message_id=p["internet_message_id"], conversation_id=p["conversation_id"],
        participants=[et.Participant(address=x["address"], name=x["name"], role=x["role"])
                      for x in p["participants"]],
        mailbox_user_ids=p["mailbox_user_ids"], mailbox_addresses=p["mailbox_addresses"], source="webhook")


def _user_struct() -> et.UserUpserted:
    p = _user_payload()
    return et.UserUpserted(user_id=p["user_id"], account_id=p["account_id"], email=p["email"],
                           aliases=p["aliases"], never_log=p["never_log"], role="member")


def typed_engagement(raw: bytes) -> bytes:
    assert et.ENGAGEMENT_EVENTS.decode(raw) is not None
    return et.encode(_engagement_struct())


def typed_user(raw: bytes) -> bytes:
    assert et.DIRECTORY_EVENTS.decode(raw) is not None
    return et.encode(_user_struct())


def wired_engagement(raw: bytes) -> bytes:
    assert et.ENGAGEMENT_EVENTS.decode(raw) is not None
    return events.encode(et.to_value(_engagement_struct()))


def wired_user(raw: bytes) -> bytes:
    assert et.DIRECTORY_EVENTS.decode(raw) is not None
    return events.encode(et.to_value(_user_struct()))


@contextlib.contextmanager
def _bracket_count_shortcut() -> Iterator[None]:
    """The dict path with the shortcut TopicEvents.decode takes (no byte-by-byte depth scan when there are
    fewer brackets than the depth limit): what is left of the difference is msgspec's own."""
    scan = json_limits.nesting_depth

    def shortcut(raw: bytes, *, stop_after: int = json_limits.MAX_DEPTH) -> int:
        openers = raw.count(b"[") + raw.count(b"{")
        return openers if openers <= stop_after else scan(raw, stop_after=stop_after)

    json_limits.nesting_depth = shortcut  # type: ignore[assignment]
    try:
        yield
    finally:
        json_limits.nesting_depth = scan  # type: ignore[assignment]


ROUNDS = 5


def _time(fn: Callable[[bytes], bytes], raw: bytes, n: int) -> float:
    """Microseconds per call: n calls in ROUNDS rounds, the fastest round (the others met a busy machine)."""
    best = float("inf")
    for _ in range(ROUNDS):
        start = time.perf_counter()
        for _ in range(n // ROUNDS):
            fn(raw)
        best = min(best, (time.perf_counter() - start) / (n // ROUNDS))
    return best * 1e6


def run(n: int = 100_000) -> dict[str, float]:
    samples = {
        "engagement.created": events.encode(events.envelope("engagement.created", _engagement_payload(),
                                                            event_id=EID)),
        "user.upserted": events.encode(events.envelope("user.upserted", _user_payload())),
    }
    paths = {"engagement.created": (dict_engagement, typed_engagement, wired_engagement),
             "user.upserted": (dict_user, typed_user, wired_user)}
    out: dict[str, float] = {}
    for kind, raw in samples.items():
        old, new, wired = paths[kind]
        for fn in (old, new, wired):
            fn(raw)  # warm
        out[f"{kind} bytes"] = len(raw)
        out[f"{kind} dict us"] = _time(old, raw, n)
        out[f"{kind} msgspec us"] = _time(new, raw, n)
        out[f"{kind} via-publisher us"] = _time(wired, raw, n)
        with _bracket_count_shortcut():
            out[f"{kind} dict+shortcut us"] = _time(old, raw, n)
        out[f"{kind} dict/msgspec"] = out[f"{kind} dict us"] / out[f"{kind} msgspec us"]
        out[f"{kind} dict/via-publisher"] = out[f"{kind} dict us"] / out[f"{kind} via-publisher us"]
        out[f"{kind} dict+shortcut/msgspec"] = out[f"{kind} dict+shortcut us"] / out[f"{kind} msgspec us"]
    return out


if __name__ == "__main__":
    iterations = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    for name, figure in run(iterations).items():
        print(f"{name:32} {figure:10.2f}")

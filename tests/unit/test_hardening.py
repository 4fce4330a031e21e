"""Pure pieces of the hardening of issue 10: bounded JSON and headers, log redaction, key ids, Graph links,
fault classification, sibling cancellation, a dead worker loop ending its process non-zero."""

from __future__ import annotations

import asyncio
import json
import logging

import asyncpg
import pytest

from services import cli
from services.core.adapters import faults
from services.core.adapters.config import ConfigError, parse_token_keys
from services.core.adapters.consuming import gather_cancelling
from services.core.adapters.graph.client import GraphClient, same_origin
from services.core.adapters.graph.errors import Classified, GraphError, Severity
from services.core.adapters.kafka import PublishError
from services.core.adapters.observability import JsonFormatter
from services.core.adapters.runtime import WorkerDied, until_a_worker_ends
from services.core.application.diagnose import DiagnoseError, parse_headers
from services.core.domain import events, json_limits

KEY = "A" * 43


@pytest.mark.parametrize("raw", [b"[" * 5000, b'{"type":"x","v":' + b"[" * 100_000 + b"]" * 100_000 + b"}"])
def test_deep_nesting_is_a_bad_event_not_a_recursion_error(raw: bytes):
    with pytest.raises(events.BadEvent, match="nests deeper"):
        events.decode(raw)


def test_brackets_inside_strings_do_not_count_and_shallow_values_pass():
    value = {"type": "contact.upserted", "note": "[" * 500 + '\\"{' * 100, "emails": [["a"]]}
    assert events.decode(json.dumps(value).encode()) == value
    assert json_limits.nesting_depth(b'{"a": [[1], {"b": []}]}') == 4


@pytest.mark.parametrize("text", ["\\u0000", "\\ud800", "a\\udfffb"])
def test_values_no_text_column_can_store_are_refused(text: str):
    with pytest.raises(events.BadEvent, match=r"NUL character|lone surrogate"):
        events.decode(('{"type":"user.upserted","email":"' + text + '"}').encode())


def test_graph_answers_keep_their_text_with_a_replacement_for_a_broken_pair():
    raw = b'{"subject": "Hi \\ud83d there", "fine": "\\ud83d\\ude00"}'
    with pytest.raises(json_limits.JsonRefused, match="lone surrogate"):
        json_limits.loads(raw)
    assert json_limits.loads(raw, lone_surrogates="replace") == {"subject": "Hi \ufffd there", "fine": "\U0001f600"}


def test_oversized_and_undecodable_records_are_bad_events():
    with pytest.raises(events.BadEvent, match="larger than"):
        events.decode(b'{"type":"x","pad":"' + b"x" * events.MAX_RECORD_BYTES + b'"}')
    with pytest.raises(events.BadEvent, match="not JSON"):
        events.decode(b"\xff\xfe")


@pytest.mark.parametrize("depth", [33, 2000, 120_000])
def test_headers_with_deeply_nested_comments_are_a_clear_error(depth: int):
    raw = "Message-ID: <m@x>\nFrom: " + "(" * depth + "x@y.example\n"
    with pytest.raises(DiagnoseError, match="nest comments"):
        parse_headers(raw)


def test_folded_comments_count_as_one_header_and_real_headers_still_parse():
    with pytest.raises(DiagnoseError):
        parse_headers("Message-ID: <m@x>\nFrom: " + "(\n " * 200 + "x@y.example\n")
    facts = parse_headers('Message-ID: <m@x>\nSubject: (a\nFrom: "Jane (ACME)" <jane@acme.example> (work)\n')
    assert facts.from_ is not None and facts.from_.address == "jane@acme.example"


def _formatted(**extra: object) -> dict[str, object]:
    record = logging.LogRecord("t", logging.INFO, __file__, 1, "m", None, None)
    record.__dict__.update(extra)
    parsed: dict[str, object] = json.loads(JsonFormatter().format(record))
    return parsed


def test_error_codes_are_logged_and_secrets_are_not():
    entry = _formatted(error_code="AADSTS50173", code="0.AUTHCODE", access_token="eyJ.x.y", client_state="s3",
                       code_verifier="v", session="jwt", connection_id="c-1", status_code=401)
    assert entry["error_code"] == "AADSTS50173" and entry["connection_id"] == "c-1" and entry["status_code"] == 401
    for secret in ("code", "access_token", "client_state", "code_verifier", "session"):
        assert entry[secret] == "[redacted]", secret


def test_key_ids_that_a_blob_could_not_name_are_refused_at_start():
    assert parse_token_keys(f"k-1_a:{KEY}")[0][0] == "k-1_a"
    for bad in ("k.1", "k 1", "ключ", "k" * 33):
        with pytest.raises(ConfigError, match="key id"):
            parse_token_keys(f"{bad}:{KEY}")


def test_links_are_followed_only_to_graphs_own_origin():
    base = "https://graph.microsoft.com/v1.0"
    assert same_origin(f"{base}/users/u/messages/delta?$skiptoken=x", base)
    for foreign in ("https://evil.example/v1.0/users", "http://graph.microsoft.com/v1.0/users",
                    "https://graph.microsoft.com.evil.example/v1.0/x", "https://graph.microsoft.com:8443/v1.0/x",
                    "https://user@graph.microsoft.com/v1.0/x", "https://graph.microsoft.com/beta/x"):
        assert not same_origin(foreign, base), foreign


async def test_the_client_refuses_a_foreign_next_link_before_sending_the_token():
    client = GraphClient(None, "https://graph.microsoft.com/v1.0")  # type: ignore[arg-type]  # never reached
    with pytest.raises(GraphError) as refused:
        await client.get_page("secret-token", "u", "https://evil.example/v1.0/users/u/messages?$skip=10")
    assert refused.value.classified.error_code == "foreign_link" and not refused.value.transient


def test_infrastructure_failures_are_retried_and_anything_else_is_the_records():
    transient = GraphError(Classified(Severity.TRANSIENT, "network_error", "x"), None)
    permanent = GraphError(Classified(Severity.PERMANENT, "bad", "x"), 400)
    for exc in (ConnectionResetError(), TimeoutError(), PublishError("x"), transient,
                asyncpg.exceptions.AdminShutdownError(), ExceptionGroup("g", [ValueError(), OSError()]),
                asyncpg.exceptions.InternalClientError("cannot switch to state 12; another operation is in progress")):
        assert faults.is_infrastructure(exc), exc
    for exc in (ValueError("x"), KeyError("k"), RecursionError(), UnicodeEncodeError("utf-8", "\ud800", 0, 1, "x"),
                permanent, asyncpg.exceptions.DataError("x")):
        assert not faults.is_infrastructure(exc), exc
    assert faults.describe(KeyError("email")) == "KeyError: 'email'"


async def test_a_failure_cancels_the_sibling_tasks_before_it_is_raised():
    finished: list[str] = []
    cancelled = asyncio.Event()

    async def slow() -> str:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        finished.append("slow")
        return "slow"

    async def failing() -> str:
        await asyncio.sleep(0)
        raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        await gather_cancelling([slow(), failing()])
    assert cancelled.is_set() and finished == []  # the sibling is already stopped when the caller retries
    assert await gather_cancelling([asyncio.sleep(0, "a"), asyncio.sleep(0, "b")]) == ["a", "b"]


async def test_a_worker_that_ends_is_fatal_whether_it_crashed_or_returned():
    async def crash() -> None:
        raise RuntimeError("consumer loop failed")

    async def forever() -> None:
        await asyncio.sleep(30)

    async def returns() -> None:
        return None

    for ending in (crash, returns):
        workers = [asyncio.create_task(forever(), name="other"), asyncio.create_task(ending(), name="loop")]
        with pytest.raises(WorkerDied, match="worker loop ended"):
            await until_a_worker_ends(workers)
        workers[0].cancel()


def test_a_dead_loop_exits_the_process_non_zero(monkeypatch: pytest.MonkeyPatch):
    settings = type("S", (), {"log_level": "INFO", "transaction_guard": False})()
    monkeypatch.setattr(cli, "_settings", lambda name: settings)

    async def dies(_: object) -> None:
        raise WorkerDied("worker notification consumer ended")

    async def stops(_: object) -> None:
        return None

    assert cli._run_service("matcher", dies) == 1  # type: ignore[arg-type]
    assert cli._run_service("matcher", stops) == 0  # type: ignore[arg-type]


def test_bulk_batches_chain_their_steps_so_graph_runs_one_at_a_time():
    from services.core.adapters.graph.client import batch_steps

    chained = batch_steps(["/a", "/b", "/c"], [4, 7, 9], "p", sequential=True)
    assert [s["id"] for s in chained] == ["4", "7", "9"]
    assert [s.get("dependsOn") for s in chained] == [None, ["4"], ["7"]]
    assert all("dependsOn" not in s for s in batch_steps(["/a", "/b"], [0, 1], "p", sequential=False))


def test_the_live_path_leaves_one_of_outlooks_four_slots_to_the_bulk_path():
    from services.core.adapters.config import BULK_GRAPH_SLOTS, Settings

    assert Settings("k", "postgresql://x").live_graph_slots + BULK_GRAPH_SLOTS == 4
    assert Settings("k", "postgresql://x", graph_concurrency_per_mailbox=1).live_graph_slots == 1

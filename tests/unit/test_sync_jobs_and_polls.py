"""The back-fill / back-sync page loop and the delta poll decided without PostgreSQL or Graph: they run against
in-memory fakes of the repositories on PollDeps (services/core/adapters/store/jobs.py and polls.py have the real ones)
and of Graph, the token service and the publisher."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from services.core.adapters.graph.errors import Classified, DeltaExpired, NotFound, Severity
from services.core.adapters.store.mailbox.connections import Connection
from services.core.adapters.store.mailbox.polls import DeltaCursor
from services.core.domain.event_types import Event, to_value
from services.renewer import delta, jobs
from services.renewer.delta import PollDeps

CONNECTION = "7d6c3d0e-0000-4000-8000-000000000001"
JOB = "7d6c3d0e-0000-4000-8000-0000000000aa"
USER = "graph-user-1"
UNTIL = datetime(2026, 11, 2, tzinfo=UTC)


@dataclass
class FakeJobs:
    """SyncJobs' progress, completion and the estimate's contact read."""
    contacts: set[str] = field(default_factory=set)
    progress: list[dict[str, Any]] = field(default_factory=list)
    completed: list[str] = field(default_factory=list)

    async def record_progress(self, job_id: str, **stored: Any) -> None:
        self.progress.append(stored)

    async def complete(self, job_id: str) -> None:
        self.completed.append(job_id)

    async def known_contacts(self, account_id: str, addresses: list[str]) -> set[str]:
        return self.contacts & set(addresses)


@dataclass
class FakePolls:
    """Polls' cursors, the undecided read and the import floor over dicts."""
    decided: set[str] = field(default_factory=set)
    cursors_by_folder: dict[str, DeltaCursor] = field(default_factory=dict)
    floor: datetime | None = None
    saved: dict[str, tuple[str | None, bool]] = field(default_factory=dict)

    async def undecided(self, connection_id: str, message_ids: list[str]) -> list[str]:
        return sorted({i for i in message_ids if i not in self.decided})

    async def cursors(self, connection_id: str) -> dict[str, DeltaCursor]:
        return dict(self.cursors_by_folder)

    async def import_floor(self, connection_id: str) -> datetime | None:
        return self.floor

    async def save_cursor(self, connection_id: str, folder_id: str, *, folder_name: str, delta_link: str | None,
                          restarted: bool) -> None:
        self.saved[folder_id] = (delta_link, restarted)


@dataclass
class FakeGraph:
    """Pages by URL (a URL not listed is an empty last page); first delta pages by URL for batch_get."""
    pages: dict[str, dict[str, Any]] = field(default_factory=dict)
    firsts: dict[str, dict[str, Any] | Exception] = field(default_factory=dict)
    folders: list[dict[str, Any]] = field(default_factory=list)
    asked: list[str] = field(default_factory=list)

    async def get_page(self, token: str, user: str, url: str, *, page_size: int = 50) -> dict[str, Any]:
        self.asked.append(url)
        return self.pages.get(url, {"value": [], "@odata.deltaLink": f"{url}#delta"})

    async def batch_get(self, token: str, user: str, urls: list[str]) -> list[Any]:
        self.asked.extend(urls)
        return [self.firsts.get(url, {"value": [], "@odata.deltaLink": f"{url}#delta"}) for url in urls]

    async def list_folders(self, token: str, user: str) -> list[dict[str, Any]]:
        return self.folders

    async def get_folder(self, token: str, user: str, folder: str) -> dict[str, Any]:
        if folder == "junkemail":
            return {"id": "junk-id"}
        raise NotFound(Classified(Severity.PERMANENT, "http_404", "gone"), 404)


class FakeTokens:
    async def access_token(self, connection_id: str, **_: Any) -> str:
        return "token"


@dataclass
class FakePublisher:
    published: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    async def publish_many(self, topic: str, records: list[tuple[str, Event]]) -> None:
        self.published.extend((key, to_value(event)) for key, event in records)  # as the record's JSON reads


def _deps(graph: FakeGraph, repos: tuple[FakePolls, FakeJobs]) -> tuple[PollDeps, FakePublisher]:
    publisher = FakePublisher()
    deps = PollDeps(pool=None, graph=graph, tokens=FakeTokens(), publisher=publisher,  # type: ignore[arg-type]
                    interval=timedelta(hours=1), relist_window=timedelta(hours=48))
    deps.polls, deps.jobs = repos  # type: ignore[assignment]
    return deps, publisher


def _job(kind: str, *, dry_run: bool = False) -> dict[str, Any]:
    return {"job_id": JOB, "connection_id": CONNECTION, "kind": kind, "dry_run": dry_run,
            "since": UNTIL - timedelta(hours=36), "until": UNTIL, "window_start": None, "next_link": None,
            "messages_seen": 0, "estimated_with_contacts": None}


def _message(message_id: str, sender: str) -> dict[str, Any]:
    return {"id": message_id, "from": {"emailAddress": {"address": sender}}}


def test_a_backfill_sends_on_only_undecided_mail_storing_its_cursor_after_every_page() -> None:
    first_window = jobs.window_url(USER, UNTIL - timedelta(days=1), UNTIL)
    graph = FakeGraph(pages={first_window: {"value": [{"id": "a"}, {"id": "b"}], "@odata.nextLink": "page-2"},
                             "page-2": {"value": [{"id": "c"}]}})
    polls, store = FakePolls(decided={"b"}), FakeJobs()
    deps, publisher = _deps(graph, (polls, store))
    asyncio.run(jobs._run(deps, _job("backfill"), USER, "acct-1"))  # type: ignore[arg-type]

    assert [event["message_id"] for _, event in publisher.published] == ["a", "c"]
    assert {event["source"] for _, event in publisher.published} == {"backfill"}
    # After each page (the next link to resume from), then at each window's end; done after the last.
    assert [(p["window_start"], p["next_link"], p["seen"]) for p in store.progress] == [
        (UNTIL, "page-2", 2), (UNTIL, None, 3), (UNTIL - timedelta(days=1), None, 3),
        (UNTIL - timedelta(days=1), None, 3), (UNTIL - timedelta(hours=36), None, 3)]
    assert store.completed == [JOB]


def test_a_backsync_resumes_from_its_stored_cursor_and_sends_on_everything_listed() -> None:
    job = _job("backsync") | {"window_start": UNTIL - timedelta(days=1), "next_link": "resume-here",
                              "messages_seen": 5}
    graph = FakeGraph(pages={"resume-here": {"value": [{"id": "b"}]}})
    store = FakeJobs()
    deps, publisher = _deps(graph, (FakePolls(decided={"b"}), store))
    asyncio.run(jobs._run(deps, job, USER, "acct-1"))  # type: ignore[arg-type]

    assert graph.asked == ["resume-here"]  # the first window is done: never listed again
    assert [e["message_id"] for _, e in publisher.published] == ["b"]  # a back-sync re-sends decided mail
    assert store.progress[0]["seen"] == 6 and store.completed == [JOB]


def test_an_estimate_counts_mail_naming_a_known_contact_and_sends_nothing() -> None:
    first_window = jobs.window_url(USER, UNTIL - timedelta(days=1), UNTIL, jobs.ESTIMATE_SELECT)
    graph = FakeGraph(pages={first_window: {"value": [_message("a", "Known@Client.example"),
                                                      _message("b", "stranger@elsewhere.example"),
                                                      {"id": "c"}]}})
    store = FakeJobs(contacts={"known@client.example"})
    deps, publisher = _deps(graph, (FakePolls(), store))
    asyncio.run(jobs._run(deps, _job("backsync", dry_run=True), USER, "acct-1"))  # type: ignore[arg-type]

    assert publisher.published == []
    assert store.progress[0]["with_contacts"] == 1 and store.progress[0]["seen"] == 3
    assert store.completed == [JOB]


def test_a_stopping_renewer_pauses_the_job_before_its_next_page() -> None:
    stop = asyncio.Event()
    stop.set()
    store = FakeJobs()
    deps, publisher = _deps(FakeGraph(), (FakePolls(), store))
    with pytest.raises(jobs.Paused):
        asyncio.run(jobs._run(deps, _job("backfill"), USER, "acct-1", stop))  # type: ignore[arg-type]
    assert store.progress == [] and store.completed == [] and publisher.published == []


def _connection() -> Connection:
    return Connection(connection_id=CONNECTION, account_id="acct-1", user_id="user-1", tenant_id=None,
                      graph_user_id=USER, mailbox_address=None, mailbox_addresses=(), status="connected")


def test_a_poll_restarts_only_the_expired_folder_skips_a_vanished_one_and_never_polls_an_excluded_one() -> None:
    last_polled = datetime.now(UTC) - timedelta(hours=3)
    polls = FakePolls(decided={"old"}, floor=datetime.now(UTC) - timedelta(hours=24),
                      cursors_by_folder={"inbox": DeltaCursor("inbox-delta", last_polled),
                                         "archive": DeltaCursor("archive-delta", last_polled)})
    expired = DeltaExpired(Classified(Severity.TRANSIENT, "syncStateNotFound", "expired"), 410, None)
    graph = FakeGraph(folders=[{"id": "inbox", "displayName": "Inbox"}, {"id": "archive"}, {"id": "gone"},
                               {"id": "junk-id"}],
                      firsts={"inbox-delta": {"value": [{"id": "new"}, {"id": "old"}, {"id": "x", "@removed": {}}],
                                              "@odata.deltaLink": "inbox-delta-2"},
                              "archive-delta": expired})
    vanished = NotFound(Classified(Severity.PERMANENT, "http_404", "gone"), 404)
    deps, publisher = _deps(graph, (polls, FakeJobs()))
    gone_url = delta.first_delta_url(USER, "gone", polls.floor)  # type: ignore[arg-type]
    graph.firsts[gone_url] = vanished

    sent = asyncio.run(delta._poll(deps, _connection(), "token"))

    assert sent == 1 and [e["message_id"] for _, e in publisher.published] == ["new"]
    assert all("junk-id" not in url for url in graph.asked)
    # The expired folder re-lists from its last poll less the relist window, and counts a restart.
    relist = delta.first_delta_url(USER, "archive", last_polled - deps.relist_window)
    assert relist in graph.asked
    assert polls.saved == {"inbox": ("inbox-delta-2", False), "archive": (f"{relist}#delta", True)}


def test_a_first_poll_looks_back_no_further_than_what_the_connection_imports() -> None:
    floor = datetime.now(UTC) - timedelta(hours=24)
    polls = FakePolls(floor=floor)
    graph = FakeGraph(folders=[{"id": "inbox"}])
    deps, _ = _deps(graph, (polls, FakeJobs()))
    asyncio.run(delta._poll(deps, _connection(), "token"))
    assert graph.asked == [delta.first_delta_url(USER, "inbox", floor)]  # not the 48 h relist window

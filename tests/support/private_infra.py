"""A private Kafka broker and PostgreSQL server for chaos tests that kill or restart them."""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import os
import secrets
import shutil
import signal
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

from tests.support.own_kafka import PrivateKafka  # puts deploy/local on sys.path
from tests.support.stack import Stack, close_clients, open_clients, start_stack, stop_stack

PostgresNode = importlib.import_module("postgres_node").PostgresNode  # the stack's own launcher
_procs = importlib.import_module("procs")  # deploy/local/procs.py: /proc helpers


class DurablePostgresNode(PostgresNode):  # type: ignore[misc, valid-type]
    """The stack's node, but with synchronous_commit on: the shared test server trades it for speed,
    which is harmless for a clean shutdown but would let kill -9 lose commits a client was told
    happened (and then the test would blame mailsync for the server's setting)."""

    def _spawn(self) -> None:
        self._argv = ["synchronous_commit=on" if a == "synchronous_commit=off" else a for a in self._argv]
        super()._spawn()


class PrivateInfra:
    def __init__(self) -> None:
        self.kafka = PrivateKafka()
        self._logs = Path(tempfile.mkdtemp(prefix="mailsync-pg-logs-"))
        self.postgres = DurablePostgresNode(self._logs, secrets.token_hex(12))

    def start(self) -> PrivateInfra:
        self.kafka.start()
        self.postgres.start()
        self.postgres.wait_ready(60)
        return self

    @property
    def env(self) -> dict[str, str]:
        return {"MAILSYNC_KAFKA_BOOTSTRAP": self.kafka.bootstrap, "MAILSYNC_DATABASE_URL": self.postgres.url}

    def restart_kafka_after_kill(self) -> None:
        """Same data directory and ports: what a crashed broker coming back looks like."""
        self.kafka.node.start()
        self.kafka.node.wait_ready(90)

    def kill_postgres(self) -> int:
        """kill -9 the postmaster and every backend (they setsid() out of its group, so they are found
        by parentage first): a crash, no shutdown checkpoint, clients cut mid-query. Returns how many
        processes were killed."""
        proc = self.postgres.proc
        assert proc is not None and proc.popen.poll() is None, "postgres is not running"
        victims = [proc.popen.pid, *_procs.descendants(proc.popen.pid)]
        for pid in victims:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        proc.popen.wait(30)
        _procs.wait_until("postgres backends gone", lambda: not any(_alive(p) for p in victims), 30)
        return len(victims)

    def start_postgres_after_kill(self, timeout: float = 60.0) -> None:
        """Same data directory and port: crash recovery replays the WAL."""
        self.postgres._spawn()
        _procs.wait_until("postgres after kill -9", self.postgres._accepting, timeout, interval=0.05,
                          alive=self.postgres.proc.dead_reason)

    def close(self) -> None:
        self.kafka.close()
        if self.postgres.proc is not None and self.postgres.proc.popen.poll() is None:
            self.postgres.proc.popen.send_signal(2)
            self.postgres.proc.popen.wait(30)
        self.postgres.remove_data()
        shutil.rmtree(self._logs, ignore_errors=True)


def _alive(pid: int) -> bool:
    st = _procs.proc_stat(pid)
    return st is not None and st[0] != "Z"


@contextlib.asynccontextmanager
async def private_stack(prefix: str, **env: str) -> AsyncIterator[tuple[Stack, PrivateInfra]]:
    """A whole stack (its own Kafka, PostgreSQL, sandbox and services) for tests that change what the shared
    one must not (a sped-up sandbox clock, services restarted or configured otherwise); stopped cleanly after."""
    infra = await asyncio.to_thread(lambda: PrivateInfra().start())
    stack = None
    codes: dict[str, int] = {}
    try:
        stack = await open_clients(await asyncio.to_thread(start_stack, {**infra.env, **env}, prefix))
        yield stack, infra
    finally:
        if stack is not None:
            await close_clients(stack)
            codes = await asyncio.to_thread(stop_stack, stack)
        await asyncio.to_thread(infra.close)
    assert all(code == 0 for code in codes.values()), f"unclean shutdown: {codes}"

"""A private Kafka broker and PostgreSQL server for chaos tests that kill or restart them."""

from __future__ import annotations

import importlib
import secrets
import shutil
import tempfile
from pathlib import Path

from tests.support.own_kafka import PrivateKafka  # puts deploy/local on sys.path

PostgresNode = importlib.import_module("postgres_node").PostgresNode  # the stack's own launcher


class PrivateInfra:
    def __init__(self) -> None:
        self.kafka = PrivateKafka()
        self._logs = Path(tempfile.mkdtemp(prefix="mailsync-pg-logs-"))
        self.postgres = PostgresNode(self._logs, secrets.token_hex(12))

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

    def close(self) -> None:
        self.kafka.close()
        if self.postgres.proc is not None and self.postgres.proc.popen.poll() is None:
            self.postgres.proc.popen.send_signal(2)
            self.postgres.proc.popen.wait(30)
        self.postgres.remove_data()
        shutil.rmtree(self._logs, ignore_errors=True)

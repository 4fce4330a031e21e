"""A second, private Kafka broker for tests that kill or stop it (the shared one stays up)."""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "deploy" / "local"))

from kafka_node import KafkaNode


class PrivateKafka:
    def __init__(self) -> None:
        self._dir = Path(tempfile.mkdtemp(prefix="mailsync-kafka-"))
        self.node = KafkaNode(self._dir, self._dir / "logs")

    @property
    def bootstrap(self) -> str:
        return self.node.bootstrap

    def start(self, timeout: float = 90.0) -> PrivateKafka:
        self.node.start()
        self.node.wait_ready(timeout)
        return self

    def kill(self) -> None:
        """kill -9: no clean shutdown, exactly like a crashed broker."""
        if self.node.proc is not None and self.node.proc.popen.poll() is None:
            self.node.proc.popen.kill()
            self.node.proc.popen.wait()

    def close(self) -> None:
        self.kill()
        shutil.rmtree(self._dir, ignore_errors=True)

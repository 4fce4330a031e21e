"""Kafka adapters: an acknowledged publisher, consumers that commit by hand, idempotent topic setup."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError

from services.core.adapters.config import Settings
from services.core.domain import events
from services.core.domain.event_types import Event, encode

# The one module that imports aiokafka (tests/unit/test_layering.py): the rest of mailsync names these.
__all__ = ["AIOKafkaConsumer", "ConsumerRecord", "KafkaError", "PublishError", "Publisher", "TopicPartition",
           "consumer"]

log = logging.getLogger(__name__)


Value = Event | dict[str, Any]


def _encoded(value: Value) -> bytes:
    return encode(value) if isinstance(value, Event) else events.encode(value)


class PublishError(Exception):
    """The broker did not acknowledge a record: callers must not report success."""


class Publisher:
    """An idempotent, acks=all producer; `publish` returns only once the broker acknowledged."""

    def __init__(self, settings: Settings, *, timeout_s: float = 30.0) -> None:
        self._producer = AIOKafkaProducer(
            bootstrap_servers=settings.kafka_bootstrap,
            client_id=settings.kafka_client_id,
            acks="all",
            enable_idempotence=True,
            linger_ms=2,
            request_timeout_ms=30_000,
            retry_backoff_ms=100,
        )
        self._timeout_s = timeout_s

    async def start(self) -> None:
        await self._producer.start()

    async def stop(self) -> None:
        await self._producer.stop()

    async def publish(self, topic: str, key: str, value: Value) -> None:
        await self.publish_many(topic, [(key, value)])

    async def publish_many(self, topic: str, records: Sequence[tuple[str, Value]]) -> None:
        """Send all records, then wait for every acknowledgement (one round trip for a batch). The services
        pass typed events (encoded by msgspec); a dict is for tools and tests that write raw records."""
        await self.publish_encoded([(topic, key, _encoded(value)) for key, value in records])

    async def publish_encoded(self, records: Sequence[tuple[str, str, bytes]]) -> None:
        """Records already encoded (topic, key, value), in order, e.g. from the outbox; one wait for all."""
        try:
            futures = [await self._producer.send(topic, key=key.encode(), value=value)
                       for topic, key, value in records]
            async with asyncio.timeout(self._timeout_s):
                await asyncio.gather(*futures)
        except (KafkaError, TimeoutError) as exc:
            raise PublishError(f"{type(exc).__name__}: {exc}") from exc

    async def flush(self) -> None:
        await self._producer.flush()


def consumer(settings: Settings, *topics: str, group: str, **options: Any) -> AIOKafkaConsumer:
    """A consumer that never auto-commits: offsets are committed after effects are durable."""
    config: dict[str, Any] = {
        "bootstrap_servers": settings.kafka_bootstrap, "client_id": settings.kafka_client_id, "group_id": group,
        "enable_auto_commit": False, "auto_offset_reset": "earliest", "isolation_level": "read_committed",
    }
    return AIOKafkaConsumer(*topics, **{**config, **options})


async def ensure_topics(settings: Settings, *, replication_factor: int = 1) -> list[str]:
    """Create every topic that is missing; returns the names created (idempotent)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap, client_id=settings.kafka_client_id)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        wanted = []
        for spec in events.TOPICS:
            for name in (spec.name, events.dlq(spec.name)):
                if name in existing:
                    continue
                config = {"retention.ms": str(spec.retention_ms)}
                if spec.compacted and name == spec.name:
                    config = {"cleanup.policy": "compact"}
                partitions = spec.partitions if name == spec.name else 1
                wanted.append(NewTopic(name, partitions, replication_factor, topic_configs=config))
        created = []
        for topic in wanted:
            try:
                response = await admin.create_topics([topic])
            except TopicAlreadyExistsError:
                continue  # another replica won the race
            for name, code, *rest in response.topic_errors:
                if code == TopicAlreadyExistsError.errno:
                    continue  # metadata lagged behind a creation that already happened
                if code != 0:
                    raise KafkaError(f"creating topic {name} failed: error {code} {rest[0] if rest else ''}")
                created.append(name)
        return created
    finally:
        await admin.close()


async def kafka_reachable(settings: Settings, timeout_s: float = 3.0) -> bool:
    admin = AIOKafkaAdminClient(
        bootstrap_servers=settings.kafka_bootstrap, request_timeout_ms=int(timeout_s * 1000)
    )
    try:
        async with asyncio.timeout(timeout_s):
            await admin.start()
            await admin.list_topics()
        return True
    except (KafkaError, TimeoutError, OSError):
        return False
    finally:
        await admin.close()

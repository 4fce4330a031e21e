"""Whose fault is an exception? Pure classification used by every consumer loop and maintenance pass.

A failure of the infrastructure (PostgreSQL, Kafka, the network, a transient Graph answer) is retried:
the record is fine and will succeed later. Anything else raised while handling one record is about
that record (its content, or a bug it triggers): retrying cannot help, so it goes to the DLQ with its
reason and the consumer moves on.
"""

from __future__ import annotations

import asyncpg

from services.core.adapters.graph.errors import GraphError
from services.core.adapters.kafka import KafkaError, PublishError

_INFRASTRUCTURE: tuple[type[BaseException], ...] = (
    OSError, TimeoutError, PublishError, KafkaError,
    asyncpg.PostgresConnectionError, asyncpg.InterfaceError, asyncpg.CannotConnectNowError,
    asyncpg.exceptions.AdminShutdownError, asyncpg.exceptions.TooManyConnectionsError,
    asyncpg.exceptions.SerializationError, asyncpg.exceptions.DeadlockDetectedError,
    asyncpg.exceptions.QueryCanceledError,
    # The driver's own state after the server died mid-query ("cannot switch to state ...: another operation
    # is in progress"): the connection is broken, the record is not at fault.
    asyncpg.exceptions.InternalClientError,
)


def is_infrastructure(exc: BaseException) -> bool:
    """True when retrying the same record later can succeed."""
    if isinstance(exc, BaseExceptionGroup):
        return any(is_infrastructure(e) for e in exc.exceptions)
    if isinstance(exc, GraphError):
        return exc.transient
    return isinstance(exc, _INFRASTRUCTURE)


def describe(exc: BaseException, limit: int = 500) -> str:
    """The DLQ reason: the exception's type and message, bounded (never a traceback)."""
    text = str(exc)
    return (f"{type(exc).__name__}: {text}" if text else type(exc).__name__)[:limit]

"""`mailsync` command line: one process per service, plus operator commands."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Callable, Coroutine
from typing import Any

from services.core.adapters.config import ConfigError, Settings, load_settings


def _settings(service: str) -> Settings:
    try:
        return load_settings(service=service)
    except ConfigError as exc:
        print(f"mailsync {service}: configuration error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


def _run_service(name: str, runner: Callable[[Settings], Coroutine[Any, Any, None]]) -> int:
    from services.core.adapters.observability import setup_logging
    from services.core.adapters.runtime import WorkerDied

    settings = _settings(name)
    setup_logging(settings.log_level)
    if settings.transaction_guard:
        from services.core.adapters import txguard

        txguard.install()
    try:
        asyncio.run(runner(settings))
    except WorkerDied as exc:
        logging.getLogger("mailsync").critical(f"{name} stopping: {exc}")
        return 1
    return 0


def cmd_subscriber(_: argparse.Namespace) -> int:
    from services.core.adapters.runtime import HttpsListener, serve
    from services.subscriber.app import create_app

    async def runner(settings: Settings) -> None:
        https = (HttpsListener(settings.tls_cert_file, settings.tls_key_file, settings.https_port)
                 if settings.tls_cert_file and settings.tls_key_file else None)
        await serve(create_app(settings), settings.http_host, settings.http_port, name="subscriber", https=https)

    return _run_service("subscriber", runner)


def cmd_matcher(_: argparse.Namespace) -> int:
    from services.matcher.app import run

    return _run_service("matcher", run)


def cmd_renewer(_: argparse.Namespace) -> int:
    from services.renewer.app import run

    return _run_service("renewer", run)


def _without_dev_tools(command: str, exc: ModuleNotFoundError, package: str) -> int:
    """The sandbox and the demo are their own distribution (./sandbox), left out of the production image."""
    if exc.name != package:  # the tool is installed but something it needs is not: not this case
        raise exc
    print(f"mailsync {command}: the sandbox and the demo are development tools, not part of this install; "
          "install ./sandbox (pip install -e ./sandbox)", file=sys.stderr)
    return 2


def cmd_sandbox(args: argparse.Namespace) -> int:
    try:
        from mailsync_sandbox import main as sandbox_main
    except ModuleNotFoundError as exc:
        return _without_dev_tools("sandbox", exc, "mailsync_sandbox")

    argv = ["--host", args.host, "--port", str(args.port)]
    for flag, value in (("--tls-cert", args.tls_cert), ("--tls-key", args.tls_key), ("--ca-file", args.ca_file)):
        if value:
            argv += [flag, value]
    return sandbox_main(argv)


def _infra_settings() -> Settings:
    """migrate/topics need only the database and Kafka; placeholders stand in for service secrets."""
    import os

    env = dict(os.environ)
    for name, value in (("MAILSYNC_CLIENT_ID", "-"), ("MAILSYNC_CLIENT_SECRET", "-"),
                        ("MAILSYNC_TOKEN_KEYS", "unused:" + "A" * 43), ("MAILSYNC_API_TOKEN", "-"),
                        ("MAILSYNC_SESSION_SECRET", "-")):
        env.setdefault(name, value)
    try:
        return load_settings(env, service="cli")
    except ConfigError as exc:
        print(f"mailsync: configuration error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


def cmd_migrate(_: argparse.Namespace) -> int:
    import asyncpg

    from services.core.adapters.db.migrate import migrate

    async def go() -> list[str]:
        conn = await asyncpg.connect(_infra_settings().database_url)
        try:
            return await migrate(conn)
        finally:
            await conn.close()

    applied = asyncio.run(go())
    print(f"migrations applied: {', '.join(applied)}" if applied else "database schema is up to date")
    return 0


def cmd_topics(args: argparse.Namespace) -> int:
    from services.core.adapters.kafka import ensure_topics

    created = asyncio.run(ensure_topics(_infra_settings(), replication_factor=args.replication_factor))
    print(f"topics created: {', '.join(created)}" if created else "all topics exist")
    return 0


def cmd_status(_: argparse.Namespace) -> int:
    from services.core.application.status_table import print_status

    return asyncio.run(print_status(_infra_settings()))


def cmd_rotate_keys(_: argparse.Namespace) -> int:
    import asyncpg

    from services.core.adapters.crypto import TokenBox
    from services.core.application.rotate_keys import rotate_keys

    settings = _settings("rotate-keys")

    async def go() -> int:
        conn = await asyncpg.connect(settings.database_url)
        try:
            return await rotate_keys(conn, TokenBox(settings.token_keys))
        finally:
            await conn.close()

    count = asyncio.run(go())
    print(f"re-encrypted the tokens of {count} connection(s) with key {settings.token_keys[0][0]!r}")
    return 0


def cmd_diagnose(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from services.core.adapters.db.pool import create_pool
    from services.core.application.diagnose import DiagnoseError, diagnose, parse_headers

    try:
        facts = parse_headers(Path(args.headers).read_text(errors="replace")) if args.headers else None
    except (OSError, DiagnoseError) as exc:
        print(f"mailsync diagnose: {exc}", file=sys.stderr)
        return 2

    async def go() -> dict[str, Any]:
        pool = await create_pool(_infra_settings(), max_size=2)
        try:
            return await diagnose(pool, args.user, args.internet_message_id, facts)
        finally:
            await pool.close()

    try:
        result = asyncio.run(go())
    except (LookupError, DiagnoseError) as exc:
        print(f"mailsync diagnose: {exc}", file=sys.stderr)
        return 2
    print(f"decision: {result['decision']}" + (f"  (folder {result['folder']})" if result.get("folder") else ""))
    for reason in result["reasons"]:
        print(f"  - [{reason['code']}] {reason['detail']}")
    if result.get("engagement_id"):
        print(f"engagement: {result['engagement_id']}")
    if args.json:
        print(json.dumps(result, indent=2))
    return 0


def cmd_purge_content(args: argparse.Namespace) -> int:
    from services.core.adapters.db.pool import create_pool
    from services.core.application.purge import Purged, purge_content

    async def go() -> Purged:
        pool = await create_pool(_infra_settings(), max_size=2)
        try:
            return await purge_content(pool, args.account)
        finally:
            await pool.close()

    try:
        done = asyncio.run(go())
    except LookupError as exc:
        print(f"mailsync purge-content: {exc}", file=sys.stderr)
        return 2
    print(f"account {done.account_id} (capture: {done.capture.value}): trimmed {done.engagements} engagement(s)"
          f" and {done.decisions} decision(s) to the tier")
    return 0


def cmd_backsync(args: argparse.Namespace) -> int:
    from datetime import UTC, datetime

    from services.core.application.backsync_cli import follow_backsync

    try:
        since, until = (datetime.fromisoformat(v.replace("Z", "+00:00")) for v in (args.since, args.until))
    except ValueError as exc:
        print(f"mailsync backsync: --since/--until must be ISO-8601 date-times ({exc})", file=sys.stderr)
        return 2
    since, until = (v if v.tzinfo else v.replace(tzinfo=UTC) for v in (since, until))
    if since >= until:
        print("mailsync backsync: --since must be before --until", file=sys.stderr)
        return 2
    return asyncio.run(follow_backsync(_infra_settings(), args.connection, since, until, args.dry_run))


def cmd_demo(args: argparse.Namespace) -> int:
    try:
        from mailsync_demo import run_demo
    except ModuleNotFoundError as exc:
        return _without_dev_tools("demo", exc, "mailsync_demo")

    return asyncio.run(run_demo(args.action))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mailsync", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("subscriber", help="webhooks, OAuth, settings page, API").set_defaults(func=cmd_subscriber)
    sub.add_parser("matcher", help="turns notifications into engagements").set_defaults(func=cmd_matcher)
    sub.add_parser("renewer", help="keeps subscriptions and tokens alive").set_defaults(func=cmd_renewer)
    sandbox = sub.add_parser("sandbox", help="the local Microsoft 365 stand-in")
    sandbox.add_argument("--host", default="127.0.0.1")
    sandbox.add_argument("--port", type=int, default=8090)
    sandbox.add_argument("--tls-cert", help="serve HTTPS with this certificate chain (PEM)")
    sandbox.add_argument("--tls-key", help="the certificate's private key (PEM)")
    sandbox.add_argument("--ca-file", help="a CA to trust when delivering notifications (the local stack's)")
    sandbox.set_defaults(func=cmd_sandbox)
    sub.add_parser("migrate", help="apply database migrations (idempotent)").set_defaults(func=cmd_migrate)
    topics = sub.add_parser("topics", help="create the Kafka topics (idempotent)")
    topics.add_argument("--replication-factor", type=int, default=1)
    topics.set_defaults(func=cmd_topics)
    sub.add_parser("status", help="every connection's health in a table").set_defaults(func=cmd_status)
    sub.add_parser("rotate-keys", help="re-encrypt stored tokens with the primary key").set_defaults(
        func=cmd_rotate_keys)
    backsync = sub.add_parser("backsync", help="queue a back-sync of a date range and follow its progress")
    backsync.add_argument("--connection", required=True, help="the connection id")
    backsync.add_argument("--since", required=True, help="ISO-8601 start (inclusive)")
    backsync.add_argument("--until", required=True, help="ISO-8601 end (exclusive)")
    backsync.add_argument("--dry-run", action="store_true", help="only count the messages")
    backsync.set_defaults(func=cmd_backsync)
    diag = sub.add_parser("diagnose", help="why a message is or is not on the timeline")
    diag.add_argument("--user", required=True, help="the user id whose mailbox should hold the message")
    which = diag.add_mutually_exclusive_group(required=True)
    which.add_argument("--internet-message-id")
    which.add_argument("--headers", help="a file holding the message's raw Internet headers")
    diag.add_argument("--json", action="store_true", help="also print the API's JSON")
    diag.set_defaults(func=cmd_diagnose)
    purge = sub.add_parser("purge-content",
                           help="remove stored subjects/previews above the account's current capture tier")
    purge.add_argument("--account", required=True, help="the account id")
    purge.set_defaults(func=cmd_purge_content)
    demo = sub.add_parser("demo", help="seed a demo account / deliver a trickle of demo mail")
    demo.add_argument("action", choices=["seed", "trickle"])
    demo.set_defaults(func=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        result: int = args.func(args)
    except KeyboardInterrupt:
        return 130
    return result


if __name__ == "__main__":
    raise SystemExit(main())

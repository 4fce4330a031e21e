"""`mailsync sandbox`: serve the sandbox until SIGINT or SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

from services.sandbox.app import create_app

log = logging.getLogger("services.sandbox")


class PathOnlyAccessLogger(AbstractAccessLogger):
    """Method, path and status only: query strings and bodies may carry codes and tokens."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        self.logger.info("%s %s %s %.1fms", request.method, request.path, response.status, time * 1000)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="mailsync sandbox", description="the local Microsoft 365 stand-in")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8090, help="0 picks a free port")
    return parser.parse_args(argv)


async def serve(host: str, port: int) -> int:
    runner = web.AppRunner(create_app(), access_log_class=PathOnlyAccessLogger, handle_signals=False)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        bound = next((a[1] for a in runner.addresses if isinstance(a, tuple)), port)
        print(f"sandbox listening on http://{host}:{bound}", flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        log.info("stopping")
    finally:
        await runner.cleanup()
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    try:
        return asyncio.run(serve(args.host, args.port))
    except OSError as exc:
        print(f"sandbox: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr, flush=True)
        return 1

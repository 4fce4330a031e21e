"""`mailsync sandbox`: serve the sandbox until SIGINT or SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import ssl
import sys

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

from mailsync_sandbox.app import create_app

log = logging.getLogger("mailsync_sandbox")


class PathOnlyAccessLogger(AbstractAccessLogger):
    """Method, path and status only: query strings and bodies may carry codes and tokens."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        self.logger.info("%s %s %s %.1fms", request.method, request.path, response.status, time * 1000)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="mailsync sandbox", description="the local Microsoft 365 stand-in")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8090, help="0 picks a free port")
    parser.add_argument("--tls-cert", default=os.environ.get("MAILSYNC_SANDBOX_TLS_CERT"),
                        help="serve HTTPS with this certificate chain (PEM), as Microsoft does")
    parser.add_argument("--tls-key", default=os.environ.get("MAILSYNC_SANDBOX_TLS_KEY"), help="its private key")
    parser.add_argument("--ca-file", default=os.environ.get("MAILSYNC_CA_FILE"),
                        help="a CA (PEM) to trust, besides the system's, when delivering notifications")
    args = parser.parse_args(argv)
    if bool(args.tls_cert) != bool(args.tls_key):
        parser.error("--tls-cert and --tls-key go together")
    return args


async def serve(host: str, port: int, *, tls_cert: str | None = None, tls_key: str | None = None,
                ca_file: str | None = None) -> int:
    runner = web.AppRunner(create_app(ca_file=ca_file), access_log_class=PathOnlyAccessLogger,
                           handle_signals=False)
    await runner.setup()
    try:
        secure = None
        if tls_cert and tls_key:
            secure = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            secure.minimum_version = ssl.TLSVersion.TLSv1_2
            secure.load_cert_chain(tls_cert, tls_key)
        site = web.TCPSite(runner, host, port, ssl_context=secure)
        await site.start()
        bound = next((a[1] for a in runner.addresses if isinstance(a, tuple)), port)
        print(f"sandbox listening on {'https' if secure else 'http'}://{host}:{bound}", flush=True)
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
        return asyncio.run(serve(args.host, args.port, tls_cert=args.tls_cert, tls_key=args.tls_key,
                                 ca_file=args.ca_file))
    except OSError as exc:
        print(f"sandbox: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr, flush=True)
        return 1

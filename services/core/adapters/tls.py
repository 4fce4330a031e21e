"""TLS contexts. Verification is never turned off: a private CA (the local stack's, or a company's) is
added to the system's trust store, not used instead of checking."""

from __future__ import annotations

import ssl
from typing import Any

import aiohttp


def client_context(ca_file: str | None = None) -> ssl.SSLContext:
    """Verifies peers against the system's CAs plus `ca_file` (hostname checked, TLS 1.2 or later)."""
    context = ssl.create_default_context()
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if ca_file:
        context.load_verify_locations(cafile=ca_file)
    return context


def server_context(cert_file: str, key_file: str) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert_file, key_file)
    return context


def client_session(ca_file: str | None = None, *, limit: int = 100, **options: Any) -> aiohttp.ClientSession:
    """An aiohttp session that verifies with `client_context`."""
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=client_context(ca_file), limit=limit),
                                 **options)

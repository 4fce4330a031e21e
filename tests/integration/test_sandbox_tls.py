"""Graph's TLS rules in the sandbox: notification URLs must be HTTPS, and the receiver's certificate is
verified (issue 11: the sandbox was kinder than Microsoft)."""

from __future__ import annotations

import datetime as dt
import secrets
import ssl
from pathlib import Path

import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from services.core.application.subscriptions import expiry_iso
from tests.integration.sandbox_support import Env, env, servers

pytestmark = pytest.mark.asyncio(loop_scope="session")
__all__ = ["env", "servers"]


def _body(url: str, user_id: str) -> dict:
    return {"changeType": "created", "notificationUrl": f"{url}/notify", "lifecycleNotificationUrl": f"{url}/lifecycle",
            "resource": f"/users/{user_id}/messages", "expirationDateTime": expiry_iso(600),
            "clientState": secrets.token_urlsafe(16)}


async def test_a_plain_http_notification_url_is_refused_as_graph_does(env: Env):
    box = await env.mailbox()
    token = await env.token(box["user_id"])
    status, error, _ = await env.graph("POST", "/subscriptions", token,
                                       body=_body(env.receiver.url.replace("https://", "http://"), box["user_id"]))
    assert status == 400 and "https" in error["error"]["message"]
    status, created, _ = await env.graph("POST", "/subscriptions", token, body=_body(env.receiver.url, box["user_id"]))
    assert status == 201 and created["id"]  # positive control: the same body with the HTTPS receiver


def _self_signed(directory: Path) -> tuple[str, str]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now).not_valid_after(now + dt.timedelta(1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
            .sign(key, hashes.SHA256()))
    cert_file, key_file = directory / "self.pem", directory / "self.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return str(cert_file), str(key_file)


async def test_a_receiver_whose_certificate_the_sandbox_cannot_verify_fails_the_handshake(env: Env, tmp_path: Path):
    async def echo(request: web.Request) -> web.Response:
        return web.Response(text=request.query.get("validationToken", ""), content_type="text/plain")

    app = web.Application()
    app.router.add_post("/notify", echo)
    app.router.add_post("/lifecycle", echo)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(*_self_signed(tmp_path))
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
    await site.start()
    port = next(a[1] for a in runner.addresses if isinstance(a, tuple))
    try:
        box = await env.mailbox()
        token = await env.token(box["user_id"])
        status, error, _ = await env.graph("POST", "/subscriptions", token,
                                           body=_body(f"https://127.0.0.1:{port}", box["user_id"]))
        assert status == 400 and "validation" in error["error"]["message"].lower()
    finally:
        await runner.cleanup()

"""Twelve-factor settings: every knob is a `MAILSYNC_*` environment variable, read once at start.

A missing or malformed setting stops the service with one clear line naming it (`ConfigError`).
"""

from __future__ import annotations

import base64
import binascii
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

DEFAULT_GRAPH_URL = "https://graph.microsoft.com/v1.0"
DEFAULT_LOGIN_URL = "https://login.microsoftonline.com"
# Mail.Send: sending from the application (POST /api/v1/users/{id}/send, docs/design.md#sends) uses Graph
# sendMail; reading needs only Mail.Read. Drafts would need Mail.ReadWrite, which mailsync does not ask for.
DEFAULT_SCOPES = ("openid", "profile", "email", "offline_access", "User.Read", "Mail.Read", "Mail.Send")


class ConfigError(Exception):
    """A setting is missing or malformed; the message names it."""


@dataclass(frozen=True)
class Settings:
    kafka_bootstrap: str
    database_url: str
    graph_url: str = DEFAULT_GRAPH_URL
    login_url: str = DEFAULT_LOGIN_URL
    tenant: str = "organizations"
    client_id: str = ""
    client_secret: str = field(default="", repr=False)
    public_url: str = "http://127.0.0.1:8080"
    token_keys: tuple[tuple[str, bytes], ...] = field(default=(), repr=False)
    api_token: str = field(default="", repr=False)
    session_secret: str = field(default="", repr=False)
    http_host: str = "0.0.0.0"
    http_port: int = 8080
    log_level: str = "INFO"
    scopes: tuple[str, ...] = DEFAULT_SCOPES
    # Declared in token requests: with cp1, Graph revokes access tokens at once after a password reset or
    # a Conditional Access change (claims challenge) instead of letting them run to expiry.
    client_capabilities: tuple[str, ...] = ("cp1",)
    kafka_client_id: str = "mailsync"
    subscription_lifetime_min: int = 4230
    matcher_group: str = "mailsync-matcher"
    matcher_batch_size: int = 100
    graph_concurrency_per_mailbox: int = 4

    @property
    def live_graph_slots(self) -> int:
        """Outlook allows 4 concurrent requests per application and mailbox, across every process of that
        application. The split: the live path (matcher) gets all but one; the bulk path (the renewer's
        polls, back-fills, back-syncs, renewals; and the subscriber's connect-time calls) one."""
        return max(1, self.graph_concurrency_per_mailbox - BULK_GRAPH_SLOTS)
    clientstate_cache_s: float = 60.0
    renewer_tick_s: float = 30.0
    rematch_window_days: int = 90
    poll_interval_s: int = 3600
    relist_window_h: int = 48
    backfill_first_h: int = 24
    backfill_cap_days: int = 60
    webhook_publish_timeout_s: float = 2.0
    # TLS: Graph calls `public_url` (HTTPS, as Microsoft requires); browsers and the API use `app_url`.
    app_url: str = ""
    ca_file: str | None = None
    tls_cert_file: str | None = None
    tls_key_file: str | None = field(default=None, repr=False)
    https_port: int = 8443
    dev_mode: bool = False
    transaction_guard: bool = False  # test mode: refuse network calls inside a transaction (core.txguard)
    # Tenant-wide connection (application permissions): a PEM holding the app's private key and certificate
    # (preferred), else the client secret; the admin consent page returns to `<app_url>/oauth/microsoft365/
    # admin-callback`.
    app_cert_file: str | None = None
    tenant_sync_interval_s: float = 30.0


def _require(env: Mapping[str, str], name: str) -> str:
    value = env.get(name, "").strip()
    if not value:
        raise ConfigError(f"{name} is required but not set")
    return value


def _url(env: Mapping[str, str], name: str, default: str) -> str:
    value = env.get(name, default).strip().rstrip("/")
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(f"{name} must be an http(s) URL, got {value!r}")
    return value


BULK_GRAPH_SLOTS = 1
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
GRAPH_FACING = frozenset({"subscriber", "renewer"})  # the services that give Graph the public URL


def _public_url(env: Mapping[str, str], service: str, dev_mode: bool) -> str:
    value = _url(env, "MAILSYNC_PUBLIC_URL", "http://127.0.0.1:8080")
    parts = urlsplit(value)
    if service in GRAPH_FACING and parts.scheme != "https" and not (dev_mode and parts.hostname in LOOPBACK_HOSTS):
        raise ConfigError(
            f"MAILSYNC_PUBLIC_URL must be https:// (Graph refuses other notification URLs), got {value!r}; "
            "plain http is allowed only for a loopback address with MAILSYNC_DEV_MODE=true")
    return value


def _file(env: Mapping[str, str], name: str) -> str | None:
    value = env.get(name, "").strip()
    if not value:
        return None
    if not os.path.isfile(value) or not os.access(value, os.R_OK):
        raise ConfigError(f"{name} names {value!r}, which is not a readable file")
    return value


def _app_certificate(env: Mapping[str, str]) -> str | None:
    """MAILSYNC_APP_CERT_FILE: a readable PEM with an unencrypted private key and its certificate."""
    path = _file(env, "MAILSYNC_APP_CERT_FILE")
    if path is None:
        return None
    with open(path, "rb") as f:
        text = f.read(1_000_000)
    if b"-----BEGIN CERTIFICATE-----" not in text or b"PRIVATE KEY-----" not in text:
        raise ConfigError(f"MAILSYNC_APP_CERT_FILE {path!r} must be a PEM holding the private key and the "
                          "certificate")
    if b"ENCRYPTED PRIVATE KEY" in text or b"Proc-Type: 4,ENCRYPTED" in text:
        raise ConfigError(f"MAILSYNC_APP_CERT_FILE {path!r} holds an encrypted key: mount it unencrypted (as a "
                          "Secret), mailsync takes no password")
    return path


def _capabilities(env: Mapping[str, str]) -> tuple[str, ...]:
    raw = env.get("MAILSYNC_CLIENT_CAPABILITIES")
    if raw is None:
        return ("cp1",)
    values = tuple(v.strip() for v in raw.split(",") if v.strip() and v.strip().lower() != "none")
    if any(not re.fullmatch(r"[A-Za-z0-9_]{1,16}", v) for v in values):
        raise ConfigError(f"MAILSYNC_CLIENT_CAPABILITIES must be a comma-separated list like cp1, got {raw!r}")
    return values


def _bool(env: Mapping[str, str], name: str) -> bool:
    raw = env.get(name, "").strip().lower()
    if raw in ("", "0", "false", "no"):
        return False
    if raw in ("1", "true", "yes"):
        return True
    raise ConfigError(f"{name} must be true or false, got {raw!r}")


def _int(env: Mapping[str, str], name: str, default: int, minimum: int = 0) -> int:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be an integer, got {raw!r}") from None
    if value < minimum:
        raise ConfigError(f"{name} must be at least {minimum}, got {value}")
    return value


_KEY_ID = re.compile(r"[A-Za-z0-9_-]{1,32}")


def parse_token_keys(raw: str, name: str = "MAILSYNC_TOKEN_KEYS") -> tuple[tuple[str, bytes], ...]:
    """`kid:base64url(32 bytes),kid2:...`; the first key encrypts, all of them decrypt."""
    keys: list[tuple[str, bytes]] = []
    for item in raw.split(","):
        item = item.strip()
        if not item:
            continue
        kid, sep, b64 = item.partition(":")
        if not sep or not kid:
            raise ConfigError(f"{name} entries must look like kid:base64key")
        if not _KEY_ID.fullmatch(kid):
            # The key id is written into every token blob and ended by a '.': one holding '.' (or anything
            # but these characters) could never be found again when decrypting.
            raise ConfigError(f"{name} key id {kid[:40]!r} must be 1-32 of A-Z a-z 0-9 _ -")
        try:
            key = base64.urlsafe_b64decode(b64 + "=" * (-len(b64) % 4))
        except (binascii.Error, ValueError):
            raise ConfigError(f"{name} key {kid!r} is not valid base64") from None
        if len(key) != 32:
            raise ConfigError(f"{name} key {kid!r} must be 32 bytes (AES-256), got {len(key)}")
        if any(k == kid for k, _ in keys):
            raise ConfigError(f"{name} has key id {kid!r} twice")
        keys.append((kid, key))
    if not keys:
        raise ConfigError(f"{name} holds no key")
    return tuple(keys)


def _database_url(env: Mapping[str, str]) -> str:
    value = _require(env, "MAILSYNC_DATABASE_URL")
    if urlsplit(value).scheme not in ("postgres", "postgresql"):
        raise ConfigError("MAILSYNC_DATABASE_URL must be a postgresql:// URL")
    return value


def load_settings(env: Mapping[str, str] | None = None, *, service: str = "") -> Settings:
    """Read settings; services that hold secrets (all but the sandbox) require them."""
    env = os.environ if env is None else env
    level = env.get("MAILSYNC_LOG_LEVEL", "INFO").upper()
    if level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise ConfigError(f"MAILSYNC_LOG_LEVEL must be DEBUG, INFO, WARNING or ERROR, got {level!r}")
    default_port = {"subscriber": 8080, "matcher": 8081, "renewer": 8082}.get(service, 8080)
    dev_mode = _bool(env, "MAILSYNC_DEV_MODE")
    public_url = _public_url(env, service, dev_mode)
    cert, key = _file(env, "MAILSYNC_TLS_CERT_FILE"), _file(env, "MAILSYNC_TLS_KEY_FILE")
    if bool(cert) != bool(key):
        raise ConfigError("MAILSYNC_TLS_CERT_FILE and MAILSYNC_TLS_KEY_FILE go together: set both or neither")
    return Settings(
        kafka_bootstrap=_require(env, "MAILSYNC_KAFKA_BOOTSTRAP"),
        database_url=_database_url(env),
        graph_url=_url(env, "MAILSYNC_GRAPH_URL", DEFAULT_GRAPH_URL),
        login_url=_url(env, "MAILSYNC_LOGIN_URL", DEFAULT_LOGIN_URL),
        tenant=env.get("MAILSYNC_TENANT", "organizations").strip() or "organizations",
        client_id=_require(env, "MAILSYNC_CLIENT_ID"),
        client_secret=_require(env, "MAILSYNC_CLIENT_SECRET"),
        public_url=public_url,
        app_url=_url(env, "MAILSYNC_APP_URL", public_url),
        ca_file=_file(env, "MAILSYNC_CA_FILE"),
        tls_cert_file=cert,
        tls_key_file=key,
        https_port=_int(env, "MAILSYNC_HTTPS_PORT", 8443, minimum=0),
        dev_mode=dev_mode,
        client_capabilities=_capabilities(env),
        transaction_guard=_bool(env, "MAILSYNC_TRANSACTION_GUARD"),
        app_cert_file=_app_certificate(env),
        tenant_sync_interval_s=float(_int(env, "MAILSYNC_TENANT_SYNC_INTERVAL_S", 30, minimum=1)),
        token_keys=parse_token_keys(_require(env, "MAILSYNC_TOKEN_KEYS")),
        api_token=_require(env, "MAILSYNC_API_TOKEN"),
        session_secret=_require(env, "MAILSYNC_SESSION_SECRET"),
        http_host=env.get("MAILSYNC_HTTP_HOST", "0.0.0.0").strip() or "0.0.0.0",
        http_port=_int(env, "MAILSYNC_HTTP_PORT", default_port, minimum=0),
        log_level=level,
        kafka_client_id=env.get("MAILSYNC_KAFKA_CLIENT_ID", f"mailsync-{service or 'cli'}"),
        subscription_lifetime_min=_int(env, "MAILSYNC_SUBSCRIPTION_LIFETIME_MIN", 4230, minimum=45),
        matcher_group=env.get("MAILSYNC_MATCHER_GROUP", "mailsync-matcher"),
        matcher_batch_size=_int(env, "MAILSYNC_MATCHER_BATCH_SIZE", 100, minimum=1),
        graph_concurrency_per_mailbox=_int(env, "MAILSYNC_GRAPH_CONCURRENCY", 4, minimum=1),
        clientstate_cache_s=float(_int(env, "MAILSYNC_CLIENTSTATE_CACHE_S", 60, minimum=0)),
        poll_interval_s=_int(env, "MAILSYNC_POLL_INTERVAL_S", 3600, minimum=1),
        relist_window_h=_int(env, "MAILSYNC_RELIST_WINDOW_H", 48, minimum=1),
        backfill_first_h=_int(env, "MAILSYNC_BACKFILL_FIRST_H", 24, minimum=0),
        backfill_cap_days=_int(env, "MAILSYNC_BACKFILL_CAP_DAYS", 60, minimum=1),
        rematch_window_days=_int(env, "MAILSYNC_REMATCH_WINDOW_DAYS", 90, minimum=0),
        renewer_tick_s=float(_int(env, "MAILSYNC_RENEWER_TICK_S", 30, minimum=1)),
        # Graph gives up after 3 s: a notification Kafka cannot take in time is answered 503.
        webhook_publish_timeout_s=float(_int(env, "MAILSYNC_WEBHOOK_PUBLISH_TIMEOUT_MS", 2000, minimum=100)) / 1000,
    )

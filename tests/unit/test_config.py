import base64

import pytest

from services.core.adapters.config import ConfigError, load_settings, parse_token_keys

KEY = base64.urlsafe_b64encode(b"k" * 32).decode().rstrip("=")


def env(**over):
    base = {
        "MAILSYNC_KAFKA_BOOTSTRAP": "127.0.0.1:9092",
        "MAILSYNC_DATABASE_URL": "postgresql://u:p@127.0.0.1:5432/db",
        "MAILSYNC_CLIENT_ID": "client",
        "MAILSYNC_CLIENT_SECRET": "secret",
        "MAILSYNC_TOKEN_KEYS": f"k1:{KEY}",
        "MAILSYNC_API_TOKEN": "api",
        "MAILSYNC_SESSION_SECRET": "session",
    }
    base.update(over)
    return {k: v for k, v in base.items() if v is not None}


def test_defaults_follow_the_contract():
    settings = load_settings(env(MAILSYNC_PUBLIC_URL="https://mailsync.example.com"), service="subscriber")
    assert settings.graph_url == "https://graph.microsoft.com/v1.0"
    assert settings.login_url == "https://login.microsoftonline.com"
    assert settings.http_port == 8080
    assert settings.token_keys[0][0] == "k1"


@pytest.mark.parametrize("name", ["MAILSYNC_KAFKA_BOOTSTRAP", "MAILSYNC_DATABASE_URL", "MAILSYNC_TOKEN_KEYS",
                                  "MAILSYNC_API_TOKEN", "MAILSYNC_SESSION_SECRET", "MAILSYNC_CLIENT_ID"])
def test_missing_setting_is_named(name):
    with pytest.raises(ConfigError, match=name):
        load_settings(env(**{name: None}))


@pytest.mark.parametrize(("name", "value"), [
    ("MAILSYNC_GRAPH_URL", "ftp://x"), ("MAILSYNC_HTTP_PORT", "eighty"), ("MAILSYNC_DATABASE_URL", "mysql://x"),
    ("MAILSYNC_TOKEN_KEYS", "k1:short"), ("MAILSYNC_TOKEN_KEYS", "nokid"), ("MAILSYNC_LOG_LEVEL", "LOUD"),
])
def test_malformed_setting_is_named(name, value):
    with pytest.raises(ConfigError, match=name):
        load_settings(env(**{name: value}))


def test_token_keys_keep_order_and_refuse_duplicates():
    keys = parse_token_keys(f"new:{KEY}, old:{KEY}")
    assert [k for k, _ in keys] == ["new", "old"]
    with pytest.raises(ConfigError, match="twice"):
        parse_token_keys(f"a:{KEY},a:{KEY}")


def test_secrets_are_not_in_repr():
    text = repr(load_settings(env(MAILSYNC_CLIENT_SECRET="s3cr3t-value", MAILSYNC_API_TOKEN="api-t0ken")))
    assert "s3cr3t-value" not in text and "api-t0ken" not in text and KEY not in text


def test_records_with_nul_characters_are_poison():
    import pytest as _pytest

    from services.core.domain.events import BadEvent, decode

    with _pytest.raises(BadEvent, match="NUL"):
        decode(b'{"type": "contact.upserted", "emails": ["a\\u0000@b.example"]}')
    assert decode(b'{"type": "x", "k": ["fine"]}')["k"] == ["fine"]


@pytest.mark.parametrize("service", ["subscriber", "renewer"])
def test_an_http_public_url_is_refused_for_the_services_that_hand_it_to_graph(service):
    with pytest.raises(ConfigError, match="MAILSYNC_PUBLIC_URL must be https"):
        load_settings(env(MAILSYNC_PUBLIC_URL="http://mailsync.example.com"), service=service)
    with pytest.raises(ConfigError, match="MAILSYNC_PUBLIC_URL must be https"):  # loopback needs dev mode
        load_settings(env(MAILSYNC_PUBLIC_URL="http://127.0.0.1:8080"), service=service)
    with pytest.raises(ConfigError, match="MAILSYNC_PUBLIC_URL must be https"):  # dev mode is loopback only
        load_settings(env(MAILSYNC_PUBLIC_URL="http://mailsync.example.com", MAILSYNC_DEV_MODE="true"),
                      service=service)
    dev = load_settings(env(MAILSYNC_PUBLIC_URL="http://127.0.0.1:8080", MAILSYNC_DEV_MODE="true"), service=service)
    assert dev.public_url == "http://127.0.0.1:8080" and dev.dev_mode
    assert load_settings(env(MAILSYNC_PUBLIC_URL="https://m.example"), service=service).app_url == "https://m.example"


def test_tls_files_must_exist_and_come_in_pairs(tmp_path):
    cert = tmp_path / "c.pem"
    cert.write_text("x")
    with pytest.raises(ConfigError, match="MAILSYNC_CA_FILE"):
        load_settings(env(MAILSYNC_CA_FILE=str(tmp_path / "missing.pem")))
    with pytest.raises(ConfigError, match="go together"):
        load_settings(env(MAILSYNC_TLS_CERT_FILE=str(cert)))
    settings = load_settings(env(MAILSYNC_CA_FILE=str(cert), MAILSYNC_TLS_CERT_FILE=str(cert),
                                 MAILSYNC_TLS_KEY_FILE=str(cert), MAILSYNC_DEV_MODE="no"))
    assert settings.ca_file == str(cert) and settings.tls_key_file == str(cert) and not settings.dev_mode
    with pytest.raises(ConfigError, match="MAILSYNC_DEV_MODE"):
        load_settings(env(MAILSYNC_DEV_MODE="maybe"))


def test_client_capabilities_default_to_cp1_and_can_be_turned_off():
    assert load_settings(env()).client_capabilities == ("cp1",)
    assert load_settings(env(MAILSYNC_CLIENT_CAPABILITIES="none")).client_capabilities == ()
    assert load_settings(env(MAILSYNC_CLIENT_CAPABILITIES="")).client_capabilities == ()
    with pytest.raises(ConfigError, match="MAILSYNC_CLIENT_CAPABILITIES"):
        load_settings(env(MAILSYNC_CLIENT_CAPABILITIES="cp1;drop table"))

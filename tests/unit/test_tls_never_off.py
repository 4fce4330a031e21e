"""TLS verification is never turned off, anywhere: no code in services/, tests/ or deploy/ disables it."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# Each pattern is a way to stop checking certificates or host names in a library this project uses.
DISABLING = re.compile("|".join((
    r"ssl\s*=\s*False", r"verify_ssl\s*=\s*False", r"verify\s*=\s*False", r"CERT_NONE",
    r"check_hostname\s*=\s*False", r"_create_unverified_context", r"ignore_https_errors",
    r"ignore-certificate-errors", r"PYTHONHTTPSVERIFY", r"CURL_CA_BUNDLE\s*=\s*['\"]{2}",
    r"rejectUnauthorized\s*:\s*false", r"NODE_TLS_REJECT_UNAUTHORIZED",
)))


def tracked_sources() -> list[Path]:
    out = subprocess.run(["git", "ls-files", "services", "tests", "deploy", "Makefile"], cwd=ROOT, check=True,
                         capture_output=True, text=True).stdout.split()
    return [ROOT / p for p in out if p.endswith((".py", ".yaml", ".yml", ".sh", "Makefile", ".toml"))]


def test_nothing_disables_tls_verification():
    this = Path(__file__).resolve()
    found = [f"{path.relative_to(ROOT)}:{n}: {line.strip()}" for path in tracked_sources() if path != this
             for n, line in enumerate(path.read_text(errors="replace").splitlines(), 1) if DISABLING.search(line)]
    assert found == [], "TLS verification disabled:\n" + "\n".join(found)


def test_the_check_would_catch_each_way_of_disabling():
    for line in ("aiohttp.TCPConnector(ssl=False)", "httpx.AsyncClient(verify=False)",
                 "ctx.verify_mode = ssl.CERT_NONE", "ctx.check_hostname = False", "ssl._create_unverified_context()",
                 "browser.new_context(ignore_https_errors=True)", "--ignore-certificate-errors"):
        assert DISABLING.search(line), line
    assert not DISABLING.search("client_context(ca_file)")

"""TLS verification is never turned off, anywhere: no code in services/, sandbox/, tests/ or deploy/ disables it."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# Each pattern is a way to stop checking certificates or host names in a library this project uses. They are
# spelt in pieces (OFF, ...) so that this file itself never reads as code that turns verification off.
OFF = "Fal" + "se"
DISABLING = re.compile("|".join((
    rf"\bssl\s*=\s*{OFF}", rf"verify_ssl\s*=\s*{OFF}", rf"\bverify\s*=\s*{OFF}", "CERT_" + "NONE",
    rf"check_hostname\s*=\s*{OFF}", "_create_" + "unverified_context", "ignore_" + "https_errors",
    "ignore-" + "certificate-errors", "PYTHONHTTPS" + "VERIFY", r"CURL_CA_BUNDLE\s*=\s*['\"]{2}",
    rf"rejectUnauthorized\s*:\s*{OFF.lower()}", "NODE_TLS_" + "REJECT_UNAUTHORIZED",
)))


def tracked_sources() -> list[Path]:
    out = subprocess.run(["git", "ls-files", "services", "sandbox", "tests", "deploy", "Makefile"], cwd=ROOT,
                         check=True, capture_output=True, text=True).stdout.split()
    return [ROOT / p for p in out if p.endswith((".py", ".yaml", ".yml", ".sh", "Makefile", ".toml"))]


def test_nothing_disables_tls_verification():
    found = [f"{path.relative_to(ROOT)}:{n}: {line.strip()}" for path in tracked_sources()  # this file too
             for n, line in enumerate(path.read_text(errors="replace").splitlines(), 1) if DISABLING.search(line)]
    assert found == [], "TLS verification disabled:\n" + "\n".join(found)


def test_the_check_would_catch_each_way_of_disabling():
    for line in (f"aiohttp.TCPConnector(ssl={OFF})", f"httpx.AsyncClient(verify={OFF})",
                 "ctx.verify_mode = ssl." + "CERT_" + "NONE", f"ctx.check_hostname = {OFF}",
                 "ssl._create_" + "unverified_context()", "new_context(ignore_" + "https_errors=True)",
                 "--ignore-" + "certificate-errors"):
        assert DISABLING.search(line), line
    assert not DISABLING.search("client_context(ca_file)")

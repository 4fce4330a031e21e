"""A Chromium profile home whose NSS database trusts the local stack's CA, as an administrator would add
a company CA: the browser verifies every certificate; nothing is ignored."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

CERTUTIL_MISSING = "certutil is required (Debian's libnss3-tools; `make test` installs it)"


def home_trusting(ca_file: str, home: Path) -> Path:
    """`home/.pki/nssdb` with the CA as a trusted issuer of server certificates; returns `home`."""
    certutil = shutil.which("certutil")
    assert certutil, CERTUTIL_MISSING
    db = home / ".pki" / "nssdb"
    db.mkdir(parents=True, exist_ok=True)
    subprocess.run([certutil, "-N", "-d", f"sql:{db}", "--empty-password"], check=True, capture_output=True)
    subprocess.run([certutil, "-A", "-d", f"sql:{db}", "-n", "mailsync local CA", "-t", "C,,", "-i", ca_file],
                   check=True, capture_output=True)
    return home

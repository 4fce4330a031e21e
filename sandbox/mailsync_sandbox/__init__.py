"""A faithful local Microsoft 365: Graph v1.0 (`/v1.0/...`), the identity platform
(`/{tenant}/oauth2/v2.0/authorize|token`) and a control API (`/sandbox/...`), as one aiohttp app.

It shares no code with the services it stands in for (only the standard library and aiohttp).
"""

from __future__ import annotations

from mailsync_sandbox.app import create_app
from mailsync_sandbox.server import main

__all__ = ["create_app", "main"]

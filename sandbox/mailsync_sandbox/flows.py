"""Authorization requests waiting for the sign-in form to come back."""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass

FLOW_LIFETIME_S = 3600.0


@dataclass
class AuthRequest:
    tenant: str
    client_id: str
    redirect_uri: str
    scopes: tuple[str, ...]
    state: str | None
    challenge: str | None
    method: str | None
    login_hint: str
    created: float


class Flows:
    """Sign-in pages waiting for their form post."""

    def __init__(self) -> None:
        self._flows: dict[str, AuthRequest] = {}

    def clear(self) -> None:
        self._flows.clear()

    def add(self, auth: AuthRequest) -> str:
        now = time.time()
        for key in [k for k, v in self._flows.items() if v.created + FLOW_LIFETIME_S < now]:
            del self._flows[key]
        flow = secrets.token_urlsafe(24)
        self._flows[flow] = auth
        return flow

    def get(self, flow: str) -> AuthRequest | None:
        return self._flows.get(flow)

    def pop(self, flow: str) -> None:
        self._flows.pop(flow, None)

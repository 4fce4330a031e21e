"""Typed application keys: the subscriber's dependencies, wired once in app.py."""

from __future__ import annotations

import aiohttp
import asyncpg
from aiohttp import web

from services.core.adapters.config import Settings
from services.core.adapters.graph.client import GraphClient
from services.core.adapters.graph.identity import IdentityClient
from services.core.adapters.kafka import Publisher
from services.core.adapters.runtime import Readiness
from services.core.application.connections import StatusReporter, TokenService
from services.subscriber.trust import SubscriptionTrust

SETTINGS = web.AppKey("settings", Settings)
POOL = web.AppKey("pool", asyncpg.Pool)
PUBLISHER = web.AppKey("publisher", Publisher)
TRUST = web.AppKey("trust", SubscriptionTrust)
HTTP = web.AppKey("http", aiohttp.ClientSession)
GRAPH = web.AppKey("graph", GraphClient)
IDENTITY = web.AppKey("identity", IdentityClient)
STATUS = web.AppKey("status", StatusReporter)
TOKENS = web.AppKey("tokens", TokenService)
READINESS = web.AppKey("readiness", Readiness)

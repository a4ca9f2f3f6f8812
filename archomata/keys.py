"""Every typed key of the app and of a request, in one place."""

from __future__ import annotations

from typing import TYPE_CHECKING

import asyncpg
from aiohttp import web
from redis.asyncio import Redis

from archomata.config import Config

if TYPE_CHECKING:
    pass

CONFIG = web.AppKey("config", Config)
DB_POOL = web.AppKey("db_pool", asyncpg.Pool)
REDIS = web.AppKey("redis", Redis)
METRICS = web.AppKey("metrics", "Metrics")
EXPECTED_SCHEMA_VERSION = web.AppKey("expected_schema_version", int)
OPENAPI = web.AppKey("openapi", dict)

REQUEST_ID = web.RequestKey("request_id", str)
PRINCIPAL = web.RequestKey("principal", "Principal | None")
CLIENT_IP = web.RequestKey("client_ip", str)

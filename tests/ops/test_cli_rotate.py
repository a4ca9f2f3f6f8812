"""`archomata rotate-data-key`: stored secrets re-sealed under a new data key, on a
database of its own (it re-seals every org's secrets)."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import secrets
from typing import Any

import asyncpg

from archomata.app import create_app
from archomata.config import Config, Secret
from archomata.crypto import key_id
from archomata.ops.devservers import PostgresServer
from tests.conftest import make_database
from tests.factories import agent_auth, agent_with_key, signed_up, trading_account
from tests.ops.test_cli import archomata

BLOB_OF = "select credentials from accounts where id = $1::uuid"


class TestRotateDataKey:
    async def test_reseals_under_the_new_key_and_needs_the_old_one(
            self, aiohttp_client: Any, postgres: PostgresServer, config: Config,
            environ: dict[str, str], mail_sink: Any) -> None:
        urls = await make_database(postgres, "cli_rotate")
        env = {**environ, "ARCHOMATA_DATABASE_URL": urls.runtime,
               "ARCHOMATA_DATABASE_OWNER_URL": urls.owner}
        here = dataclasses.replace(config, database_url=Secret(urls.runtime))
        client = await aiohttp_client(create_app(here))
        admin = await signed_up(client, mail_sink)
        agent, key = await agent_with_key(client, admin)
        account = await trading_account(client, admin, agent_id=agent["id"],
                                        password="rotate-me-pw")
        old, new_key = environ["ARCHOMATA_DATA_KEY"], secrets.token_bytes(32)
        new = base64.b64encode(new_key).decode()
        owner = await asyncpg.connect(urls.owner)
        try:
            before = await owner.fetchval(BLOB_OF, account["id"])
            refused = await asyncio.to_thread(archomata, "rotate-data-key",
                                              env={**env, "ARCHOMATA_DATA_KEY": new})
            assert refused.returncode == 2
            assert "ARCHOMATA_DATA_KEY_PREVIOUS" in refused.stderr
            assert await owner.fetchval(BLOB_OF, account["id"]) == before

            rotated = await asyncio.to_thread(archomata, "rotate-data-key", env={
                **env, "ARCHOMATA_DATA_KEY": new, "ARCHOMATA_DATA_KEY_PREVIOUS": old})
            assert rotated.returncode == 0, rotated.stderr
            assert f"data key {key_id(new_key)}: 1 of 1" in rotated.stdout
            assert "rotate-me-pw" not in rotated.stdout + rotated.stderr
            assert (await owner.fetchval(BLOB_OF, account["id"]))[1:5].hex() == key_id(new_key)

            rotated_app = await aiohttp_client(create_app(
                dataclasses.replace(here, data_key=Secret(new_key))))
            fetched = await (await rotated_app.get("/api/v1/bridge/accounts",
                                                   headers=agent_auth(key))).json()
            assert fetched["items"][0]["credentials"] == {"password": "rotate-me-pw"}

            # A blob copied from another account does not open: named, left, exit 1.
            moved = await trading_account(client, admin, password="another-pw")
            await owner.execute("update accounts set credentials = $1 where id = $2::uuid",
                                await owner.fetchval(BLOB_OF, moved["id"]), account["id"])
            again = await asyncio.to_thread(archomata, "rotate-data-key", env={
                **env, "ARCHOMATA_DATA_KEY": new, "ARCHOMATA_DATA_KEY_PREVIOUS": old})
            assert again.returncode == 1
            assert account["id"] in again.stderr
            assert "1 of 2" in again.stdout
        finally:
            await owner.close()

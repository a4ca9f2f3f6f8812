"""`archomata rotate-data-key`: every stored secret (MT5 credentials, TOTP secrets, pending
or confirmed) re-sealed under a new data key, on a database of its own (it re-seals every
org's secrets); afterwards the new key alone opens them, and a secret that does not open
answers 503 `secret_unavailable`, never 500."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import logging
import secrets
from typing import Any

import asyncpg
import pytest

from archomata.app import create_app
from archomata.config import Config, Secret
from archomata.crypto import DataKeys, UnknownKeyError, key_id
from archomata.ops.cli_rotate import sealed_kinds
from archomata.ops.devservers import PostgresServer
from tests.conftest import make_database
from tests.factories import Session, agent_auth, agent_with_key, signed_up, trading_account
from tests.identity.test_mfa import VERIFY, challenge, code, enrol
from tests.ops.test_cli import archomata
from tests.secret_scan import remember

BLOB_OF = "select credentials from accounts where id = $1::uuid"
TOTP_BLOBS = "select user_id, secret_sealed from mfa_totp"


def new_key() -> tuple[bytes, str]:
    key = secrets.token_bytes(32)
    text = base64.b64encode(key).decode()
    remember(text)
    return key, text


async def pending_enrolment(client: Any, me: Session) -> str:
    """An enrolment started, not confirmed: its secret."""
    started = await client.post("/api/v1/me/mfa/totp", headers=me.auth,
                                json={"current_password": me.password})
    assert started.status == 200, await started.text()
    secret: str = (await started.json())["secret"]
    remember(secret)
    return secret


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
        old = environ["ARCHOMATA_DATA_KEY"]
        new_bytes, new = new_key()
        owner = await asyncpg.connect(urls.owner)
        try:
            before = await owner.fetchval(BLOB_OF, account["id"])
            refused = await asyncio.to_thread(archomata, "rotate-data-key",
                                              env={**env, "ARCHOMATA_DATA_KEY": new})
            assert refused.returncode == 2
            assert "ARCHOMATA_DATA_KEY_PREVIOUS" in refused.stderr
            assert f"credentials of {account['id']}" in refused.stderr
            assert await owner.fetchval(BLOB_OF, account["id"]) == before

            rotated = await asyncio.to_thread(archomata, "rotate-data-key", env={
                **env, "ARCHOMATA_DATA_KEY": new, "ARCHOMATA_DATA_KEY_PREVIOUS": old})
            assert rotated.returncode == 0, rotated.stderr
            assert f"data key {key_id(new_bytes)}: credentials 1 of 1 re-sealed; " \
                   "totp 0 of 0 re-sealed" in rotated.stdout
            assert "rotate-me-pw" not in rotated.stdout + rotated.stderr
            assert (await owner.fetchval(BLOB_OF, account["id"]))[1:5].hex() == key_id(new_bytes)

            rotated_app = await aiohttp_client(create_app(
                dataclasses.replace(here, data_key=Secret(new_bytes))))
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
            assert f"credentials {account['id']}" in again.stderr
            assert "credentials 1 of 2" in again.stdout
        finally:
            await owner.close()

    async def test_every_sealed_secret_moves_to_the_new_key_and_the_old_one_opens_none(
            self, aiohttp_client: Any, postgres: PostgresServer, config: Config,
            environ: dict[str, str], mail_sink: Any) -> None:
        """Credentials, a confirmed TOTP secret and a pending one: re-sealed in one run;
        with the old key dropped, the TOTP user signs in with the right code, the pending
        enrolment confirms and the agent fetches its credentials."""
        urls = await make_database(postgres, "cli_rotate_all")
        env = {**environ, "ARCHOMATA_DATABASE_URL": urls.runtime,
               "ARCHOMATA_DATABASE_OWNER_URL": urls.owner}
        here = dataclasses.replace(config, database_url=Secret(urls.runtime))
        client = await aiohttp_client(create_app(here))
        admin = await signed_up(client, mail_sink)
        agent, key = await agent_with_key(client, admin)
        await trading_account(client, admin, agent_id=agent["id"], password="broker-pw")
        enrolled = await signed_up(client, mail_sink, org_name="Enrolled")
        secret, _ = await enrol(client, enrolled)
        pending = await signed_up(client, mail_sink, org_name="Pending")
        pending_secret = await pending_enrolment(client, pending)

        new_bytes, new = new_key()
        rotated = await asyncio.to_thread(archomata, "rotate-data-key", env={
            **env, "ARCHOMATA_DATA_KEY": new,
            "ARCHOMATA_DATA_KEY_PREVIOUS": environ["ARCHOMATA_DATA_KEY"]})
        assert rotated.returncode == 0, rotated.stderr
        assert "credentials 1 of 1 re-sealed; totp 2 of 2 re-sealed" in rotated.stdout
        assert secret not in rotated.stdout + rotated.stderr

        owner = await asyncpg.connect(urls.owner)
        try:
            blobs = await owner.fetch(TOTP_BLOBS)
            creds = await owner.fetch("select id, credentials from accounts "
                                      "where credentials is not null")
        finally:
            await owner.close()
        assert len(blobs) == 2 and len(creds) == 1
        old_only = DataKeys(config.data_key.reveal())
        for blob in [bytes(r["secret_sealed"]) for r in blobs] + [creds[0]["credentials"]]:
            assert blob[1:5].hex() == key_id(new_bytes)
            with pytest.raises(UnknownKeyError):  # a leaked old key opens nothing
                old_only.decrypt(blob, b"")

        # The old key dropped: the new one alone opens everything.
        after = await aiohttp_client(create_app(
            dataclasses.replace(here, data_key=Secret(new_bytes), data_key_previous=())))
        token = await challenge(after, enrolled)
        verified = await after.post(VERIFY, json={"mfa_token": token,
                                                  "code": code(secret, steps_ahead=1)})
        assert verified.status == 200, await verified.text()
        assert "access_token" in await verified.json()
        confirmed = await after.post("/api/v1/me/mfa/totp/confirm", headers=pending.auth,
                                     json={"code": code(pending_secret)})
        assert confirmed.status == 200, await confirmed.text()
        fetched = await after.get("/api/v1/bridge/accounts", headers=agent_auth(key))
        assert fetched.status == 200
        assert (await fetched.json())["items"][0]["credentials"] == {"password": "broker-pw"}

    async def test_every_kind_sealed_with_the_data_key_is_rotated(self) -> None:
        assert [kind.name for kind in sealed_kinds()] == ["credentials", "totp"]


class TestSecretThatDoesNotOpen:
    async def test_a_secret_under_an_unknown_key_answers_503_and_tells_the_operator(
            self, aiohttp_client: Any, config: Config, mail_sink: Any,
            caplog: pytest.LogCaptureFixture) -> None:
        """Sealed under the configured key, then served by an instance that knows only
        another: the TOTP verify, the enrolment's confirmation and the agent's credentials
        fetch each answer 503 `secret_unavailable`, one log line naming the kind and the
        row, no secret anywhere."""
        client = await aiohttp_client(create_app(config))
        admin = await signed_up(client, mail_sink)
        agent, key = await agent_with_key(client, admin)
        account = await trading_account(client, admin, agent_id=agent["id"],
                                        password="unopened-pw")
        enrolled = await signed_up(client, mail_sink, org_name="Enrolled")
        secret, _ = await enrol(client, enrolled)
        pending = await signed_up(client, mail_sink, org_name="Pending")
        pending_secret = await pending_enrolment(client, pending)

        elsewhere = await aiohttp_client(create_app(
            dataclasses.replace(config, data_key=Secret(new_key()[0]), data_key_previous=())))
        caplog.clear()
        with caplog.at_level(logging.ERROR, logger="archomata.sealed"):
            token = await challenge(elsewhere, enrolled)
            answers = [
                await elsewhere.post(VERIFY, json={"mfa_token": token,
                                                   "code": code(secret, steps_ahead=1)}),
                await elsewhere.post("/api/v1/me/mfa/totp/confirm", headers=pending.auth,
                                     json={"code": code(pending_secret)}),
                await elsewhere.get("/api/v1/bridge/accounts", headers=agent_auth(key)),
            ]
            bodies = [await a.text() for a in answers]
        for answer, body in zip(answers, bodies, strict=True):
            assert answer.status == 503, body
            assert answer.content_type == "application/problem+json"
            assert '"code":"secret_unavailable"' in body.replace(" ", "")
            assert secret not in body and "unopened-pw" not in body
        lines = [(r.kind, r.row_id, r.key_id) for r in caplog.records  # type: ignore[attr-defined]
                 if r.name == "archomata.sealed"]
        sealed_under = key_id(config.data_key.reveal())
        assert lines == [("totp", str(enrolled.user_id), sealed_under),
                         ("totp", str(pending.user_id), sealed_under),
                         ("credentials", account["id"], sealed_under)]
        logged = " ".join(r.getMessage() + str(r.__dict__) for r in caplog.records)
        assert secret not in logged and "unopened-pw" not in logged
        # The instance that holds the key still serves them.
        fetched = await client.get("/api/v1/bridge/accounts", headers=agent_auth(key))
        assert (await fetched.json())["items"][0]["credentials"] == {"password": "unopened-pw"}

"""Identity and sessions through the real API, on real PostgreSQL, Redis and SMTP."""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import time
from typing import Any
from uuid import UUID

import jwt
import pytest

from archomata import keys
from archomata.app import create_app
from archomata.config import Config
from tests.factories import (
    FRONTEND,
    login,
    refresh_cookie_of,
    register,
    signed_up,
    strong_password,
    unique_email,
    wait_for_mail,
)


async def audit_actions(owner_conn: Any, **where: Any) -> list[str]:
    clauses = " and ".join(f"{k} = ${i}" for i, k in enumerate(where, 1))
    rows = await owner_conn.fetch(
        f"select action from audit_log where {clauses} order by occurred_at", *where.values())
    return [r["action"] for r in rows]


async def refresh(client: Any, token: str) -> Any:
    return await client.post("/api/v1/auth/refresh",
                             headers={"Cookie": f"archomata_refresh={token}", "Origin": FRONTEND})


class TestJourney:
    async def test_register_verify_login_refresh_switch_logout(
            self, client: Any, mail_sink: Any, owner_conn: Any) -> None:
        email, password, user = await register(client, mail_sink, org_name="First Org")
        me = await login(client, email, password)
        assert me.body["token_type"] == "Bearer"
        assert me.body["expires_in"] == 900
        assert me.body["org"]["name"] == "First Org"
        assert me.body["org"]["org_role"] == "administrator"
        assert me.body["user"]["email_verified"] is True

        profile = await client.get("/api/v1/me", headers=me.auth)
        assert profile.status == 200
        body = await profile.json()
        assert body["user"]["id"] == user["id"]
        assert body["org_role"] == "administrator"
        assert [o["name"] for o in body["orgs"]] == ["First Org"]

        rotated = await refresh(client, me.refresh)
        assert rotated.status == 200
        new_refresh = refresh_cookie_of(rotated)
        assert new_refresh and new_refresh != me.refresh
        access = (await rotated.json())["access_token"]

        second_org = await _second_org_for(client, mail_sink, owner_conn, UUID(user["id"]))
        switched = await client.post(
            "/api/v1/auth/switch-org", json={"org_id": str(second_org)},
            headers={"Authorization": f"Bearer {access}",
                     "Cookie": f"archomata_refresh={new_refresh}", "Origin": FRONTEND})
        assert switched.status == 200, await switched.text()
        switched_body = await switched.json()
        assert switched_body["org"]["id"] == str(second_org)
        claims = jwt.decode(switched_body["access_token"], options={"verify_signature": False})
        assert claims["org"] == str(second_org)
        moved_refresh = refresh_cookie_of(switched)
        assert moved_refresh and moved_refresh != new_refresh
        after_switch = await refresh(client, moved_refresh)
        assert (await after_switch.json())["org"]["id"] == str(second_org)

        logout = await client.post("/api/v1/auth/logout", headers={
            "Cookie": f"archomata_refresh={refresh_cookie_of(after_switch)}", "Origin": FRONTEND})
        assert logout.status == 204
        assert refresh_cookie_of(logout) is None
        assert (await client.get("/api/v1/me", headers={
            "Authorization": f"Bearer {switched_body['access_token']}"})).status == 401

        actions = await audit_actions(owner_conn, actor_id=UUID(user["id"]))
        for expected in ("user.registered", "auth.email.verified", "auth.login.succeeded",
                         "auth.org.switched", "auth.logout"):
            assert expected in actions

    async def test_refresh_cookie_has_the_contract_attributes(self, client: Any,
                                                              mail_sink: Any) -> None:
        email, password, _ = await register(client, mail_sink)
        response = await client.post("/api/v1/auth/login",
                                     json={"email": email, "password": password})
        header = next(h for h in response.headers.getall("Set-Cookie")
                      if h.startswith("archomata_refresh="))
        parts = {p.strip().split("=")[0].lower(): p.strip() for p in header.split(";")}
        assert "httponly" in parts
        assert "secure" in parts
        assert parts["samesite"].lower() == "samesite=strict"
        assert parts["path"] == "Path=/api/v1/auth"
        assert parts["max-age"] == "Max-Age=604800"
        token = header.split(";")[0].split("=", 1)[1]
        assert len(token) >= 43  # 256 bits of randomness, base64url


async def _second_org_for(client: Any, mail_sink: Any, owner_conn: Any, user_id: UUID) -> UUID:
    other = await signed_up(client, mail_sink, org_name="Second Org")
    await owner_conn.execute("insert into memberships (org_id, user_id, org_role) "
                             "values ($1, $2, 'member')", other.org_id, user_id)
    assert other.org_id is not None
    return other.org_id


class TestRegistration:
    async def test_login_before_verification_is_refused(self, client: Any,
                                                        mail_sink: Any) -> None:
        email, password, _ = await register(client, mail_sink, verify=False)
        response = await client.post("/api/v1/auth/login",
                                     json={"email": email, "password": password})
        assert response.status == 403
        assert (await response.json())["code"] == "email_not_verified"

    async def test_email_is_unique_after_case_folding_and_normalisation(
            self, client: Any, mail_sink: Any, owner_conn: Any) -> None:
        email, _, user = await register(client, mail_sink)
        local, domain = email.split("@")
        twin = f"{local.upper()}@{domain.upper()}".replace("E", "\uff25", 1)  # fullwidth E
        response = await client.post("/api/v1/auth/register", json={
            "email": twin, "password": strong_password(), "name": "Twin", "org_name": "X"})
        # The same answer as for a new address (the contract: it never tells), but no
        # second account: the owner hears that someone tried, once a cool-down.
        assert response.status == 201, await response.text()
        answered = (await response.json())["user"]
        assert answered["id"] != user["id"] and answered["email"] == twin
        await client.app[keys.LATER].drain(10)
        assert await owner_conn.fetchval(
            "select count(*) from users where id = any($1::uuid[])",
            [UUID(answered["id"]), UUID(user["id"])]) == 1
        again = await client.post("/api/v1/auth/register", json={
            "email": email, "password": strong_password(), "name": "Again", "org_name": "Y"})
        assert again.status == 201
        await client.app[keys.LATER].drain(10)
        assert [m["Subject"] for m in mail_sink.to(email)
                if "tried" in m["Subject"]] == ["Someone tried to register with your "
                                                 "Archomata address"]

    async def test_the_answer_for_a_taken_address_has_the_shape_of_a_new_one(
            self, client: Any, mail_sink: Any) -> None:
        email, _, _ = await register(client, mail_sink)
        bodies, headers = [], []
        for address in (email, unique_email()):
            response = await client.post("/api/v1/auth/register", json={
                "email": address, "password": strong_password(), "name": "Same",
                "org_name": "Same"})
            assert response.status == 201
            bodies.append(await response.json())
            headers.append({k: v for k, v in response.headers.items()
                            if k not in {"Date", "X-Request-ID", "Content-Length",
                                         "RateLimit-Remaining"}})
        assert headers[0] == headers[1]
        assert [set(b) for b in bodies] == [{"user"}] * 2
        assert [{k: v for k, v in b["user"].items() if k not in {"id", "email", "created_at"}}
                for b in bodies] == [{"name": "Same", "email_verified": False,
                                      "platform_role": "user", "disabled": False}] * 2

    async def test_verification_token_is_single_use(self, client: Any, mail_sink: Any) -> None:
        email, _, _ = await register(client, mail_sink, verify=False)
        token = await wait_for_mail(mail_sink, email, "verify")
        assert (await client.post("/api/v1/auth/verify-email", json={"token": token})).status \
            == 200
        again = await client.post("/api/v1/auth/verify-email", json={"token": token})
        assert again.status == 400
        assert (await again.json())["code"] == "invalid_token"

    @pytest.mark.parametrize("path", ["/api/v1/auth/resend-verification",
                                      "/api/v1/auth/password-reset/request"])
    async def test_mail_requests_answer_202_for_unknown_emails(self, client: Any,
                                                               path: str) -> None:
        response = await client.post(path, json={"email": unique_email("nobody")})
        assert response.status == 202

    async def test_short_password_is_refused(self, client: Any) -> None:
        response = await client.post("/api/v1/auth/register", json={
            "email": unique_email(), "password": "short", "name": "x", "org_name": "y"})
        assert response.status == 422
        assert "password" in (await response.json())["errors"]


class TestLogin:
    async def test_unknown_email_wrong_password_and_disabled_user_look_alike(
            self, client: Any, mail_sink: Any, owner_conn: Any) -> None:
        email, password, user = await register(client, mail_sink)
        unknown = await client.post("/api/v1/auth/login",
                                    json={"email": unique_email(), "password": password})
        wrong = await client.post("/api/v1/auth/login",
                                  json={"email": email, "password": password + "x"})
        await owner_conn.execute("update users set disabled_at = now() where id = $1",
                                 UUID(user["id"]))
        disabled = await client.post("/api/v1/auth/login",
                                     json={"email": email, "password": password})
        bodies = [await r.json() for r in (unknown, wrong, disabled)]
        assert {r.status for r in (unknown, wrong, disabled)} == {401}
        assert {b["code"] for b in bodies} == {"invalid_credentials"}
        assert len({b["detail"] for b in bodies}) == 1
        assert await audit_actions(owner_conn, actor_id=UUID(user["id"]),
                                   action="auth.login.failed") == ["auth.login.failed"] * 2

    async def test_every_password_character_counts(self, client: Any, mail_sink: Any) -> None:
        password = "a" * 100 + "Z"
        email, _, _ = await register(client, mail_sink, password=password)
        near = await client.post("/api/v1/auth/login",
                                 json={"email": email, "password": "a" * 100 + "Y"})
        assert near.status == 401
        await login(client, email, password)

    async def test_weaker_hash_is_upgraded_at_login(self, aiohttp_client: Any, config: Config,
                                                    mail_sink: Any, owner_conn: Any) -> None:
        weak = await aiohttp_client(create_app(config))
        email, password, user = await register(weak, mail_sink)
        stronger = await aiohttp_client(create_app(dataclasses.replace(config, bcrypt_rounds=5)))
        await login(stronger, email, password)
        stored = await owner_conn.fetchval("select password_hash from users where id = $1",
                                           UUID(user["id"]))
        assert stored.startswith("$2b$05$")

    async def test_bcrypt_never_runs_on_the_event_loop_thread(
            self, client: Any, mail_sink: Any, monkeypatch: pytest.MonkeyPatch) -> None:
        import threading

        import archomata.identity.passwords as passwords

        threads: list[str] = []
        real_hash, real_check = passwords.bcrypt.hashpw, passwords.bcrypt.checkpw

        def hashpw(*args: Any) -> Any:
            threads.append(threading.current_thread().name)
            return real_hash(*args)

        def checkpw(*args: Any) -> Any:
            threads.append(threading.current_thread().name)
            return real_check(*args)

        monkeypatch.setattr(passwords.bcrypt, "hashpw", hashpw)
        monkeypatch.setattr(passwords.bcrypt, "checkpw", checkpw)
        email, password, _ = await register(client, mail_sink)
        await login(client, email, password)
        loop_thread = threading.current_thread().name
        assert threads
        assert loop_thread not in threads
        assert all(name.startswith("bcrypt") for name in threads)


class TestRefresh:
    async def test_nine_concurrent_refreshes_share_one_successor(
            self, client: Any, mail_sink: Any) -> None:
        me = await signed_up(client, mail_sink)
        assert me.refresh is not None
        # Nine tabs at once, then the successor once: the family's ten a minute.
        responses = await asyncio.gather(*(refresh(client, me.refresh) for _ in range(9)))
        assert [r.status for r in responses] == [200] * 9
        successors = {refresh_cookie_of(r) for r in responses}
        assert len(successors) == 1
        successor = successors.pop()
        assert successor and successor != me.refresh
        assert (await refresh(client, successor)).status == 200

    async def test_replaying_an_older_token_revokes_the_session(
            self, client: Any, mail_sink: Any, owner_conn: Any) -> None:
        me = await signed_up(client, mail_sink)
        assert me.refresh is not None
        first = refresh_cookie_of(await refresh(client, me.refresh))
        assert first is not None
        second = refresh_cookie_of(await refresh(client, first))
        assert second is not None
        replay = await refresh(client, me.refresh)  # the grandparent: reuse
        assert replay.status == 401
        assert (await replay.json())["code"] == "session_revoked"
        assert (await refresh(client, second)).status == 401
        assert (await client.get("/api/v1/me", headers=me.auth)).status == 401
        assert "auth.refresh.reuse_detected" in await audit_actions(owner_conn,
                                                                    actor_id=me.user_id)

    async def test_parent_after_the_grace_window_revokes_the_session(
            self, aiohttp_client: Any, config: Config, mail_sink: Any) -> None:
        client = await aiohttp_client(create_app(
            dataclasses.replace(config, refresh_reuse_grace_seconds=1)))
        me = await signed_up(client, mail_sink)
        assert me.refresh is not None
        successor = refresh_cookie_of(await refresh(client, me.refresh))
        assert (await refresh(client, me.refresh)).status == 200  # inside the window
        await asyncio.sleep(1.2)
        late = await refresh(client, me.refresh)
        assert late.status == 401
        assert successor is not None
        assert (await refresh(client, successor)).status == 401

    async def test_zero_grace_refuses_the_parent_at_once(
            self, aiohttp_client: Any, config: Config, mail_sink: Any) -> None:
        client = await aiohttp_client(create_app(
            dataclasses.replace(config, refresh_reuse_grace_seconds=0)))
        me = await signed_up(client, mail_sink)
        assert me.refresh is not None
        assert (await refresh(client, me.refresh)).status == 200
        assert (await refresh(client, me.refresh)).status == 401

    async def test_garbage_cookie_is_refused(self, client: Any) -> None:
        response = await refresh(client, "not-a-real-token")
        assert response.status == 401
        assert (await response.json())["code"] == "session_revoked"


class TestSessions:
    async def test_list_and_revoke_one_session(self, client: Any, mail_sink: Any) -> None:
        first = await signed_up(client, mail_sink)
        second = await login(client, first.email, first.password)
        listed = await (await client.get("/api/v1/auth/sessions", headers=first.auth)).json()
        assert len(listed["items"]) == 2
        assert [s["current"] for s in listed["items"]].count(True) == 1
        second_sid = jwt.decode(second.access, options={"verify_signature": False})["sid"]
        deleted = await client.delete(f"/api/v1/auth/sessions/{second_sid}", headers=first.auth)
        assert deleted.status == 204
        assert (await client.get("/api/v1/me", headers=second.auth)).status == 401
        assert (await client.get("/api/v1/me", headers=first.auth)).status == 200

    async def test_cannot_revoke_someone_elses_session(self, client: Any,
                                                       mail_sink: Any) -> None:
        mine, theirs = await signed_up(client, mail_sink), await signed_up(client, mail_sink)
        their_sid = jwt.decode(theirs.access, options={"verify_signature": False})["sid"]
        response = await client.delete(f"/api/v1/auth/sessions/{their_sid}", headers=mine.auth)
        assert response.status == 404
        assert (await client.get("/api/v1/me", headers=theirs.auth)).status == 200

    async def test_logout_all_kills_every_session_and_token(self, client: Any,
                                                            mail_sink: Any) -> None:
        first = await signed_up(client, mail_sink)
        second = await login(client, first.email, first.password)
        response = await client.post("/api/v1/auth/logout-all", headers=first.auth)
        assert response.status == 204
        for session in (first, second):
            assert (await client.get("/api/v1/me", headers=session.auth)).status == 401
            assert session.refresh is not None
            assert (await refresh(client, session.refresh)).status == 401


class TestPasswords:
    async def test_reset_is_single_use_and_ends_every_session(
            self, client: Any, mail_sink: Any, owner_conn: Any) -> None:
        me = await signed_up(client, mail_sink)
        await client.post("/api/v1/auth/password-reset/request", json={"email": me.email})
        token = await wait_for_mail(mail_sink, me.email, "reset")
        new_password = strong_password()
        done = await client.post("/api/v1/auth/password-reset/confirm",
                                 json={"token": token, "new_password": new_password})
        assert done.status == 204
        again = await client.post("/api/v1/auth/password-reset/confirm",
                                  json={"token": token, "new_password": strong_password()})
        assert again.status == 400
        assert (await again.json())["code"] == "invalid_token"
        assert (await client.get("/api/v1/me", headers=me.auth)).status == 401
        assert me.refresh is not None
        assert (await refresh(client, me.refresh)).status == 401
        await login(client, me.email, new_password)
        actions = await audit_actions(owner_conn, actor_id=me.user_id)
        assert "auth.password_reset.requested" in actions
        assert "auth.password_reset.completed" in actions

    async def test_reset_link_uses_the_frontend_url_not_the_host_header(
            self, client: Any, mail_sink: Any) -> None:
        me = await signed_up(client, mail_sink)
        await client.post("/api/v1/auth/password-reset/request", json={"email": me.email},
                          headers={"Host": "evil.example", "X-Forwarded-Host": "evil.example"})
        await wait_for_mail(mail_sink, me.email, "reset")
        body = mail_sink.to(me.email)[-1].get_payload(decode=True).decode()
        assert f"{FRONTEND}/reset-password?token=" in body
        assert "evil.example" not in body

    async def test_change_keeps_this_session_and_ends_the_others(
            self, client: Any, mail_sink: Any) -> None:
        me = await signed_up(client, mail_sink)
        other = await login(client, me.email, me.password)
        wrong = await client.post("/api/v1/auth/password/change", headers=me.auth, json={
            "current_password": "not-my-password", "new_password": strong_password()})
        assert wrong.status == 422
        new_password = strong_password()
        changed = await client.post("/api/v1/auth/password/change", headers=me.auth, json={
            "current_password": me.password, "new_password": new_password})
        assert changed.status == 204
        assert (await client.get("/api/v1/me", headers=me.auth)).status == 200
        assert me.refresh is not None
        assert (await refresh(client, me.refresh)).status == 200
        assert (await client.get("/api/v1/me", headers=other.auth)).status == 401
        await login(client, me.email, new_password)


def _forge(config: Config, claims: dict[str, Any], key: str | None = None,
           algorithm: str = "HS256", kid: str = "k1") -> str:
    secret = key if key is not None else dict(config.jwt_secrets)[kid].reveal()
    return jwt.encode(claims, secret, algorithm=algorithm, headers={"kid": kid})


class TestAccessTokens:
    @pytest.fixture
    async def me(self, client: Any, mail_sink: Any) -> Any:
        return await signed_up(client, mail_sink)

    def _claims(self, me: Any, **changes: Any) -> dict[str, Any]:
        claims = jwt.decode(me.access, options={"verify_signature": False})
        claims.update(changes)
        return {k: v for k, v in claims.items() if v is not None}

    async def _status(self, client: Any, token: str) -> tuple[int, str]:
        response = await client.get("/api/v1/me", headers={"Authorization": f"Bearer {token}"})
        return response.status, (await response.json()).get("code", "")

    async def test_valid_token_is_accepted(self, client: Any, me: Any, config: Config) -> None:
        assert (await self._status(client, _forge(config, self._claims(me))))[0] == 200

    async def test_second_configured_key_is_accepted_by_kid(self, client: Any, me: Any,
                                                            config: Config) -> None:
        token = _forge(config, self._claims(me), kid="k0")
        assert (await self._status(client, token))[0] == 200

    async def test_alg_none_is_refused(self, client: Any, me: Any) -> None:
        token = jwt.encode(self._claims(me), None, algorithm="none", headers={"kid": "k1"})
        assert await self._status(client, token) == (401, "token_invalid")

    @pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")
    async def test_other_algorithm_is_refused(self, client: Any, me: Any,
                                              config: Config) -> None:
        token = _forge(config, self._claims(me), algorithm="HS512")
        assert await self._status(client, token) == (401, "token_invalid")

    async def test_wrong_key_is_refused(self, client: Any, me: Any, config: Config) -> None:
        token = _forge(config, self._claims(me), key="x" * 40)
        assert await self._status(client, token) == (401, "token_invalid")

    async def test_unknown_kid_is_refused(self, client: Any, me: Any, config: Config) -> None:
        claims = self._claims(me)
        token = jwt.encode(claims, dict(config.jwt_secrets)["k1"].reveal(), algorithm="HS256",
                           headers={"kid": "nope"})
        assert await self._status(client, token) == (401, "token_invalid")

    async def test_wrong_audience_is_refused(self, client: Any, me: Any,
                                             config: Config) -> None:
        token = _forge(config, self._claims(me, aud="someone-else"))
        assert await self._status(client, token) == (401, "token_invalid")

    async def test_wrong_issuer_is_refused(self, client: Any, me: Any, config: Config) -> None:
        token = _forge(config, self._claims(me, iss="evil"))
        assert await self._status(client, token) == (401, "token_invalid")

    async def test_expired_token_is_refused(self, client: Any, me: Any, config: Config) -> None:
        past = int(time.time()) - 3600
        token = _forge(config, self._claims(me, iat=past - 900, exp=past))
        assert await self._status(client, token) == (401, "token_expired")

    async def test_missing_session_claim_is_refused(self, client: Any, me: Any,
                                                    config: Config) -> None:
        claims = self._claims(me)
        del claims["sid"]
        assert await self._status(client, _forge(config, claims)) == (401, "token_invalid")

    async def test_no_token_is_401(self, client: Any) -> None:
        response = await client.get("/api/v1/me")
        assert response.status == 401
        assert response.content_type == "application/problem+json"


class TestRevocationState:
    async def test_lost_redis_state_is_rebuilt_before_tokens_count_again(
            self, client: Any, mail_sink: Any, owner_conn: Any) -> None:
        me = await signed_up(client, mail_sink)
        await owner_conn.execute("update users set disabled_at = now() where id = $1",
                                 me.user_id)
        redis = client.app[keys.REDIS]
        await redis.flushall()
        # Sessions lived only in Redis: the token is refused, and so is the disabled user.
        assert (await client.get("/api/v1/me", headers=me.auth)).status == 401
        assert await redis.hget(f"rv:user:{me.user_id}", "disabled") == b"1"
        assert await redis.exists("rv:ready:v2")

    async def test_redis_down_fails_closed(self, aiohttp_client: Any, config: Config,
                                           mail_sink: Any, workdir: Any) -> None:
        from archomata.config import Secret
        from archomata.ops.devservers import RedisServer, free_port

        redis = RedisServer(workdir / "redis-authn", free_port(), durable=False)
        redis.start()
        try:
            client = await aiohttp_client(create_app(
                dataclasses.replace(config, redis_url=Secret(redis.url))))
            me = await signed_up(client, mail_sink)
            assert (await client.get("/api/v1/me", headers=me.auth)).status == 200
            await asyncio.to_thread(redis.stop)
            down = await client.get("/api/v1/me", headers=me.auth)
            assert down.status == 503
        finally:
            redis.stop()


class TestHotPath:
    async def test_an_authorised_request_talks_to_redis_once(
            self, client: Any, mail_sink: Any, monkeypatch: pytest.MonkeyPatch) -> None:
        from redis.asyncio.connection import AbstractConnection

        me = await signed_up(client, mail_sink)
        assert (await client.get("/api/v1/org", headers=me.auth)).status == 200  # warm cache
        sends: list[int] = []
        real = AbstractConnection.send_packed_command

        async def counting(self: Any, *args: Any, **kwargs: Any) -> Any:
            sends.append(1)
            return await real(self, *args, **kwargs)

        monkeypatch.setattr(AbstractConnection, "send_packed_command", counting)
        response = await client.get("/api/v1/org", headers=me.auth)
        assert response.status == 200
        assert "RateLimit-Remaining" in response.headers  # the limit was checked too
        assert len(sends) == 1

    async def test_the_gate_script_is_loaded_again_after_a_script_flush(
            self, client: Any, mail_sink: Any) -> None:
        me = await signed_up(client, mail_sink)
        first = await client.get("/api/v1/org", headers=me.auth)
        await client.app[keys.REDIS].script_flush()
        second = await client.get("/api/v1/org", headers=me.auth)
        assert (first.status, second.status) == (200, 200)
        # Counted in Redis's window, not afresh in memory (which would show more left).
        assert int(second.headers["RateLimit-Remaining"]) < \
            int(first.headers["RateLimit-Remaining"])


class TestLoginThrottle:
    async def test_failures_from_many_ips_slow_the_account_then_let_the_owner_in(
            self, aiohttp_client: Any, config: Config, mail_sink: Any) -> None:
        client = await aiohttp_client(create_app(dataclasses.replace(
            config, login_backoff_after=2, login_backoff_max_seconds=1.0,
            trusted_proxies=(ipaddress.ip_network("127.0.0.0/8"),))))
        email, password, _ = await register(client, mail_sink)
        statuses = []
        for attempt in range(4):
            response = await client.post(
                "/api/v1/auth/login", json={"email": email, "password": "wrong-password-x"},
                headers={"X-Forwarded-For": f"203.0.113.{attempt + 1}"})
            statuses.append(response.status)
        assert statuses[:2] == [401, 401]
        assert 429 in statuses[2:]
        blocked = await client.post("/api/v1/auth/login",
                                    json={"email": email, "password": password},
                                    headers={"X-Forwarded-For": "198.51.100.7"})
        assert blocked.status == 429
        assert int(blocked.headers["Retry-After"]) >= 1
        await asyncio.sleep(1.1)
        await login(client, email, password)

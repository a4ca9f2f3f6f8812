"""Single sign-on against a real OpenID provider on loopback (tests/oidc_provider.py),
configured as both Google and Azure AD. A hand-driven browser (tests/browser.py) follows
every redirect between the SPA, the service and the provider, carrying cookies the way
browsers do, SameSite included."""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit
from uuid import UUID, uuid4

import aiohttp
import jwt
import pytest
from aiohttp import web
from joserfc.jwk import RSAKey

from archomata import keys
from archomata.app import create_app
from archomata.config import load_config
from archomata.identity import linking
from archomata.identity.store.users import same_mailbox
from archomata.ops.devservers import free_port
from tests.browser import Browser, Visit
from tests.factories import FRONTEND, login, register, signed_up, strong_password, unique_email
from tests.identity.test_mfa import code, enrol
from tests.oidc_provider import IdpUser, OidcProvider
from tests.secret_scan import remember

GOOGLE_CLIENT_ID = "archomata-test.apps.googleusercontent.example"
AZURE_CLIENT_ID = str(uuid4())


@dataclass
class World:
    """The service on 127.0.0.1 with both providers on 127.0.0.2, and a way to make
    browsers."""

    service: str
    app: web.Application
    google: OidcProvider
    azure: OidcProvider
    http: aiohttp.ClientSession

    def browser(self) -> Browser:
        return Browser(self.http, stop_at=(FRONTEND,))

    def login_url(self, provider: str = "google", next_path: str | None = "/dashboard") -> str:
        url = f"{self.service}/api/v1/auth/sso/{provider}/login"
        return url if next_path is None else f"{url}?next={quote(next_path, safe='')}"

    async def sign_in(self, provider: str = "google", next_path: str | None = "/dashboard",
                      browser: Browser | None = None) -> tuple[Visit, Browser]:
        browser = browser or self.browser()
        return await browser.navigate(self.login_url(provider, next_path), FRONTEND), browser

    async def refresh(self, browser: Browser) -> dict[str, Any]:
        """What the SPA does on landing: trade the refresh cookie for an access token."""
        response = await browser.fetch("POST", f"{self.service}/api/v1/auth/refresh",
                                       origin=FRONTEND)
        assert response.status == 200, await response.text()
        return await response.json()


@pytest.fixture
async def providers() -> AsyncIterator[tuple[OidcProvider, OidcProvider]]:
    google = OidcProvider("google", GOOGLE_CLIENT_ID, secrets.token_urlsafe(24))
    azure = OidcProvider("azure", AZURE_CLIENT_ID, secrets.token_urlsafe(24))
    await google.start()
    await azure.start()
    yield google, azure
    await google.close()
    await azure.close()


async def start_world(aiohttp_server: Any, environ: dict[str, str],
                      providers: tuple[OidcProvider, OidcProvider],
                      enabled: tuple[str, ...] = ("google", "azure"),
                      **extra: str) -> World:
    port = free_port()
    public = f"http://127.0.0.1:{port}"
    env = {**environ, "ARCHOMATA_PUBLIC_URL": public, **extra}
    for idp in providers:
        idp.redirect_uris.add(f"{public}/api/v1/auth/sso/{idp.flavour}/callback")
        if idp.flavour in enabled:
            prefix = f"ARCHOMATA_SSO_{idp.flavour.upper()}_"
            env.update({prefix + "CLIENT_ID": idp.client_id,
                        prefix + "CLIENT_SECRET": idp.client_secret,
                        prefix + "METADATA_URL": idp.metadata_url})
    app = create_app(load_config(env))
    await aiohttp_server(app, host="127.0.0.1", port=port, access_log=None)
    http = aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar())
    return World(public, app, *providers, http=http)


@pytest.fixture
async def world(aiohttp_server: Any, environ: dict[str, str],
                providers: tuple[OidcProvider, OidcProvider]) -> AsyncIterator[World]:
    w = await start_world(aiohttp_server, environ, providers)
    yield w
    await w.http.close()


async def mark(owner_conn: Any) -> datetime:
    return await owner_conn.fetchval("select clock_timestamp()")


async def entries(owner_conn: Any, since: datetime, action: str) -> list[dict[str, Any]]:
    rows = await owner_conn.fetch(
        "select actor_id, org_id, resource_type, resource_id, details from audit_log "
        "where occurred_at >= $1 and action = $2 order by occurred_at", since, action)
    return [{**dict(r), "details": json.loads(r["details"])} for r in rows]


async def mfa_token_of(world: World) -> str:
    """An SSO sign-in of someone with a second factor: the challenge's token, no cookie."""
    visit, _ = await world.sign_in()
    path, _, query = visit.url.partition("?")
    assert path == f"{FRONTEND}/login/mfa", visit
    token = parse_qs(query)["mfa_token"][0]
    remember(token)
    return token


async def identities_of(client: Any, auth: dict[str, str]) -> list[dict[str, Any]]:
    listed = await client.get("/api/v1/me/identities", headers=auth)
    assert listed.status == 200, await listed.text()
    items: list[dict[str, Any]] = (await listed.json())["items"]
    return items


def refused(visit: Visit, code: str) -> None:
    assert visit.url == f"{FRONTEND}/login?error={code}", visit


def google_user(**fields: Any) -> IdpUser:
    return IdpUser(email=fields.pop("email", None) or unique_email("google"), **fields)


def azure_user(**fields: Any) -> IdpUser:
    return IdpUser(email=fields.pop("email", None) or unique_email("azure"), **fields)


class TestSignIn:
    async def test_first_sign_in_creates_the_account_and_the_second_signs_it_in(
            self, world: World, owner_conn: Any) -> None:
        world.google.user = google_user(name="Grace Hopper")
        since = await mark(owner_conn)
        visit, browser = await world.sign_in(next_path="/dashboard?tab=orders")
        assert visit.url == f"{FRONTEND}/dashboard?tab=orders"
        assert browser.cookie("archomata_sso") is None  # the binding is spent
        first = await world.refresh(browser)
        assert first["user"]["email"] == world.google.user.email
        assert first["user"]["email_verified"] is True
        assert first["org"]["org_role"] == "administrator"
        user_id = UUID(first["user"]["id"])
        assert await owner_conn.fetchval(
            "select password_hash from users where id = $1", user_id) is None

        listed = await world.http.get(f"{world.service}/api/v1/me/identities",
                                      headers={"Authorization": f"Bearer {first['access_token']}"})
        items = (await listed.json())["items"]
        assert [(i["provider"], i["email"]) for i in items] == [
            ("google", world.google.user.email)]
        assert set(items[0]) == {"id", "provider", "email", "linked_at"}

        second_visit, second = await world.sign_in()
        assert second_visit.url == f"{FRONTEND}/dashboard"
        assert (await world.refresh(second))["user"]["id"] == str(user_id)
        assert await owner_conn.fetchval("select count(*) from user_identities "
                                         "where user_id = $1", user_id) == 1

        registered = await entries(owner_conn, since, "user.registered")
        assert [r["actor_id"] for r in registered] == [user_id]
        linked = await entries(owner_conn, since, "auth.sso.linked")
        assert [(r["actor_id"], r["details"]["via"]) for r in linked] == [(user_id, "signup")]
        assert linked[0]["org_id"] == UUID(first["org"]["id"])
        logins = await entries(owner_conn, since, "auth.sso.login")
        assert [(r["actor_id"], r["details"]["via"]) for r in logins] == [
            (user_id, "signup"), (user_id, "identity")]
        assert all(r["details"]["provider"] == "google" for r in logins)

    async def test_cookies_state_and_redirect_uri(self, world: World) -> None:
        world.google.user = google_user()
        response = await world.http.get(world.login_url(), allow_redirects=False,
                                        headers={"Host": "evil.example"})
        assert response.status == 302
        binding = next(h for h in response.headers.getall("Set-Cookie")
                       if h.startswith("archomata_sso="))
        attributes = {p.strip().split("=")[0].lower(): p.strip() for p in binding.split(";")}
        assert attributes["samesite"].lower() == "samesite=lax"
        assert {"httponly", "secure"} <= attributes.keys()
        assert attributes["path"] == "Path=/api/v1/auth/sso"
        assert attributes["max-age"] == "Max-Age=600"
        target = urlsplit(response.headers["Location"])
        assert f"{target.scheme}://{target.netloc}" == world.google.base_url
        params = {k: v[0] for k, v in parse_qs(target.query).items()}
        # Built from ARCHOMATA_PUBLIC_URL, whatever Host the request claimed.
        assert params["redirect_uri"] == f"{world.service}/api/v1/auth/sso/google/callback"
        assert params["code_challenge_method"] == "S256"
        assert len(params["code_challenge"]) == 43
        assert params["response_type"] == "code"
        assert params["client_id"] == GOOGLE_CLIENT_ID
        assert set(params["scope"].split()) == {"openid", "email", "profile"}
        assert len(params["state"]) >= 43 and len(params["nonce"]) >= 43

        visit, _ = await world.sign_in()
        refresh = next(h for h in visit.set_cookies if h.startswith("archomata_refresh="))
        parts = {p.strip().split("=")[0].lower(): p.strip() for p in refresh.split(";")}
        assert parts["samesite"].lower() == "samesite=strict"
        assert {"httponly", "secure"} <= parts.keys()
        assert parts["path"] == "Path=/api/v1/auth"
        assert parts["max-age"] == "Max-Age=604800"

    async def test_a_disabled_user_is_sent_to_the_login_page(
            self, world: World, owner_conn: Any) -> None:
        world.google.user = google_user()
        visit, browser = await world.sign_in()
        user_id = UUID((await world.refresh(browser))["user"]["id"])
        await owner_conn.execute("update users set disabled_at = now() where id = $1", user_id)
        since = await mark(owner_conn)
        visit, browser = await world.sign_in()
        refused(visit, "user_disabled")
        assert browser.cookie("archomata_refresh") is None
        failed = await entries(owner_conn, since, "auth.login.failed")
        assert [(r["actor_id"], r["details"]["reason"]) for r in failed] == [
            (user_id, "user_disabled")]

    async def test_the_person_refusing_at_the_provider_lands_on_the_login_page(
            self, world: World) -> None:
        world.google.user = google_user()
        world.google.deny = True
        visit, _ = await world.sign_in()
        refused(visit, "access_denied")

    async def test_a_person_whose_every_org_is_disabled_is_sent_to_the_login_page(
            self, world: World, owner_conn: Any) -> None:
        world.google.user = google_user()
        _, browser = await world.sign_in()
        org_id = UUID((await world.refresh(browser))["org"]["id"])
        await owner_conn.execute("update orgs set disabled_at = now() where id = $1", org_id)
        refused((await world.sign_in())[0], "org_disabled")

    async def test_a_provider_that_is_down_sends_the_person_back_with_an_error(
            self, world: World, owner_conn: Any) -> None:
        world.google.user = google_user()
        await world.google.close()
        since = await mark(owner_conn)
        visit, browser = await world.sign_in()
        refused(visit, "sso_unavailable")
        assert browser.cookie("archomata_sso") is None
        failed = await entries(owner_conn, since, "auth.login.failed")
        assert [r["details"]["reason"] for r in failed] == ["provider_unreachable"]

    async def test_an_unexpected_failure_is_a_redirect_not_a_trace(
            self, world: World, monkeypatch: pytest.MonkeyPatch, caplog: Any) -> None:
        async def broken(*_: Any, **__: Any) -> Any:
            raise RuntimeError("a bug")
        monkeypatch.setattr(linking, "resolve", broken)
        world.google.user = google_user()
        visit, _ = await world.sign_in()
        refused(visit, "server_error")
        assert visit.status == 302  # a redirect, not a problem document or a trace
        assert "SSO sign-in failed unexpectedly" in caplog.text

    async def test_sign_up_can_be_turned_off(
            self, aiohttp_server: Any, environ: dict[str, str],
            providers: tuple[OidcProvider, OidcProvider], owner_conn: Any) -> None:
        world = await start_world(aiohttp_server, environ, providers,
                                  ARCHOMATA_SSO_ALLOW_SIGNUP="false")
        try:
            world.google.user = google_user()
            visit, _ = await world.sign_in()
            refused(visit, "signup_disabled")
            assert await owner_conn.fetchval("select count(*) from users where email = $1",
                                             world.google.user.email) == 0
        finally:
            await world.http.close()


class TestLinking:
    async def test_a_password_account_with_the_same_verified_email_is_linked(
            self, world: World, client: Any, mail_sink: Any, owner_conn: Any) -> None:
        email, password, user = await register(client, mail_sink)
        world.google.user = google_user(email=email.upper())
        since = await mark(owner_conn)
        visit, browser = await world.sign_in()
        assert visit.url == f"{FRONTEND}/dashboard"
        assert (await world.refresh(browser))["user"]["id"] == user["id"]
        linked = await entries(owner_conn, since, "auth.sso.linked")
        assert [(str(r["actor_id"]), r["details"]) for r in linked] == [
            (user["id"], {"provider": "google", "via": "email_match"})]
        await login(client, email, password)  # the password still works

    async def test_a_person_with_a_second_factor_is_sent_for_the_code_without_a_cookie(
            self, world: World, client: Any, mail_sink: Any) -> None:
        me = await signed_up(client, mail_sink)
        secret, _ = await enrol(client, me)
        world.google.user = google_user(email=me.email)
        visit, browser = await world.sign_in()
        path, _, query = visit.url.partition("?")
        assert path == f"{FRONTEND}/login/mfa"
        token = parse_qs(query)["mfa_token"][0]
        no_session = await browser.fetch("POST", f"{world.service}/api/v1/auth/refresh",
                                         origin=FRONTEND)
        assert no_session.status == 401  # no cookie came with the redirect
        done = await client.post("/api/v1/auth/mfa/verify",
                                 json={"mfa_token": token, "code": code(secret, 1)})
        assert done.status == 200, await done.text()
        body = await done.json()
        assert body["user"]["id"] == str(me.user_id)
        amr = jwt.decode(body["access_token"], options={"verify_signature": False})["amr"]
        assert set(amr) == {"sso", "otp"}

    async def test_an_abandoned_challenge_links_nothing_and_the_code_links_it(
            self, world: World, client: Any, mail_sink: Any, owner_conn: Any) -> None:
        me = await signed_up(client, mail_sink)
        secret, _ = await enrol(client, me)
        world.google.user = google_user(email=me.email)
        since = await mark(owner_conn)
        await mfa_token_of(world)  # abandoned
        assert await identities_of(client, me.auth) == []
        assert await entries(owner_conn, since, "auth.sso.linked") == []
        # Signing in again asks again, and the proven code links it, audited with it.
        done = await client.post("/api/v1/auth/mfa/verify",
                                 json={"mfa_token": await mfa_token_of(world),
                                       "code": code(secret, 1)})
        assert done.status == 200, await done.text()
        [identity] = await identities_of(client, me.auth)
        assert identity["provider"] == "google"
        linked = await entries(owner_conn, since, "auth.sso.linked")
        assert [(r["actor_id"], r["resource_id"], r["org_id"], r["details"])
                for r in linked] == [(me.user_id, identity["id"], me.org_id,
                                      {"provider": "google", "via": "email_match"})]
        [session] = await entries(owner_conn, since, "auth.sso.login")
        assert session["details"] == {"provider": "google", "via": "email_match",
                                      "identity_id": identity["id"]}

    async def test_an_identity_linked_to_someone_else_before_the_code_is_not_linked(
            self, world: World, client: Any, mail_sink: Any, owner_conn: Any) -> None:
        me = await signed_up(client, mail_sink)
        secret, _ = await enrol(client, me)
        world.google.user = google_user(email=me.email)
        mfa_token = await mfa_token_of(world)
        # The same provider account, under another address, signs up meanwhile: free to.
        world.google.user = google_user(email=unique_email("other"), sub=world.google.user.sub)
        visit, browser = await world.sign_in()
        assert visit.url == f"{FRONTEND}/dashboard"
        other = await world.refresh(browser)
        late = await client.post("/api/v1/auth/mfa/verify",
                                 json={"mfa_token": mfa_token, "code": code(secret, 1)})
        assert late.status == 400 and (await late.json())["code"] == "invalid_token"
        assert await identities_of(client, me.auth) == []
        assert await owner_conn.fetchval(
            "select user_id from user_identities where provider = 'google' and subject = $1",
            world.google.user.sub) == UUID(other["user"]["id"])

    async def test_google_email_not_verified_links_nothing(
            self, world: World, client: Any, mail_sink: Any, owner_conn: Any) -> None:
        email, password, user = await register(client, mail_sink)
        world.google.user = google_user(email=email, email_verified=False)
        since = await mark(owner_conn)
        visit, _ = await world.sign_in()
        refused(visit, "email_not_verified")
        assert await owner_conn.fetchval("select count(*) from user_identities "
                                         "where user_id = $1", UUID(user["id"])) == 0
        failed = await entries(owner_conn, since, "auth.login.failed")
        assert [r["details"] for r in failed] == [
            {"method": "sso", "provider": "google", "reason": "email_not_verified"}]
        world.google.user = google_user(email=email, email_verified=None)  # claim absent
        refused((await world.sign_in())[0], "email_not_verified")
        await login(client, email, password)

    async def test_azure_email_links_only_with_xms_edov_and_keys_on_tid_oid(
            self, world: World, client: Any, mail_sink: Any, owner_conn: Any) -> None:
        email, _, user = await register(client, mail_sink)
        world.azure.user = azure_user(email=email)  # nOAuth: anyone can type this email
        refused((await world.sign_in("azure"))[0], "email_not_verified")
        world.azure.user = azure_user(email=email, xms_edov=False)
        refused((await world.sign_in("azure"))[0], "email_not_verified")
        assert await owner_conn.fetchval("select count(*) from user_identities "
                                         "where user_id = $1", UUID(user["id"])) == 0

        world.azure.user = azure_user(email=email, xms_edov=True)
        _, browser = await world.sign_in("azure")
        assert (await world.refresh(browser))["user"]["id"] == user["id"]
        subject = await owner_conn.fetchval(
            "select subject from user_identities where user_id = $1 and provider = 'azure'",
            UUID(user["id"]))
        assert subject == f"{world.azure.user.tid}:{world.azure.user.oid}"

    async def test_an_azure_identity_stays_with_its_person_when_the_email_claim_changes(
            self, world: World, client: Any, mail_sink: Any) -> None:
        other_email, _, other = await register(client, mail_sink)
        person = azure_user(xms_edov=True)
        world.azure.user = person
        _, browser = await world.sign_in("azure")
        person_id = (await world.refresh(browser))["user"]["id"]
        # The tenant's admin rewrites the mutable email to someone else's address.
        person.email = other_email
        _, browser = await world.sign_in("azure")
        assert (await world.refresh(browser))["user"]["id"] == person_id != other["id"]

    async def test_an_unverified_pre_registered_account_is_taken_over_and_wiped(
            self, world: World, client: Any, mail_sink: Any, owner_conn: Any) -> None:
        victim = unique_email("victim")
        squatter_password = strong_password()
        _, _, squatted = await register(client, mail_sink, email=victim,
                                        password=squatter_password, verify=False)
        user_id = UUID(squatted["id"])
        # Whatever foothold the squatter may hold: a live session.
        sessions = world.app[keys.SESSIONS]
        _, squatter_refresh = await sessions.create(user_id, None, "203.0.113.9", "squatter")
        remember(squatter_refresh)
        answer = await client.post("/api/v1/auth/login",
                                   json={"email": victim, "password": squatter_password})
        assert (await answer.json())["code"] == "email_not_verified"  # password is right

        world.google.user = google_user(email=victim)
        since = await mark(owner_conn)
        visit, browser = await world.sign_in()
        assert visit.url == f"{FRONTEND}/dashboard"
        signed_in = await world.refresh(browser)
        assert signed_in["user"]["id"] == str(user_id)
        assert signed_in["user"]["email_verified"] is True

        row = await owner_conn.fetchrow("select password_hash, email_verified_at from users "
                                        "where id = $1", user_id)
        assert row["password_hash"] is None and row["email_verified_at"] is not None
        answer = await client.post("/api/v1/auth/login",
                                   json={"email": victim, "password": squatter_password})
        assert (await answer.json())["code"] == "invalid_credentials"
        stale = await world.http.post(f"{world.service}/api/v1/auth/refresh", headers={
            "Cookie": f"archomata_refresh={squatter_refresh}", "Origin": FRONTEND})
        assert stale.status == 401
        linked = await entries(owner_conn, since, "auth.sso.linked")
        assert [(r["actor_id"], r["details"]["via"]) for r in linked] == [(user_id, "takeover")]


class TestRefusals:
    async def test_a_replayed_state_is_refused(self, world: World, owner_conn: Any) -> None:
        world.google.user = google_user()
        visit, browser = await world.sign_in()
        callback = visit.hops[-1]
        assert callback.startswith(f"{world.service}/api/v1/auth/sso/google/callback?")
        since = await mark(owner_conn)
        replay = await browser.navigate(callback, world.google.base_url)
        refused(replay, "invalid_state")
        failed = await entries(owner_conn, since, "auth.login.failed")
        assert [r["details"]["reason"] for r in failed] == ["state_unknown_expired_or_used"]

    @pytest.mark.parametrize("query", ["", "?code=abc", "?state=&code=abc",
                                       "?state=never-issued&code=abc"])
    async def test_a_callback_without_a_known_state_is_refused(
            self, world: World, query: str) -> None:
        callback = f"{world.service}/api/v1/auth/sso/google/callback{query}"
        refused(await world.browser().navigate(callback, world.google.base_url),
                "invalid_state")

    async def test_a_state_issued_to_another_browser_is_refused(self, world: World) -> None:
        world.google.user = google_user()
        attacker = Browser(world.http, stop_at=(FRONTEND, f"{world.service}/api/v1/auth/sso/"
                                                          "google/callback"))
        stopped = await attacker.navigate(world.login_url(), FRONTEND)
        assert "code=" in stopped.url  # the attacker's own code and state, not followed
        victim = Browser(world.http, stop_at=attacker.stop_at)
        await victim.navigate(world.login_url(), FRONTEND)  # even mid-sign-in of their own
        victim.stop_at = (FRONTEND,)
        visit = await victim.navigate(stopped.url, world.google.base_url)
        refused(visit, "invalid_state")
        assert victim.cookie("archomata_refresh") is None

    async def test_a_callback_for_another_provider_is_refused(self, world: World) -> None:
        world.google.user = google_user()
        browser = Browser(world.http, stop_at=(FRONTEND, f"{world.service}/api/v1/auth/sso/"
                                                         "google/callback"))
        stopped = await browser.navigate(world.login_url(), FRONTEND)
        moved = stopped.url.replace("/sso/google/callback", "/sso/azure/callback")
        browser.stop_at = (FRONTEND,)
        refused(await browser.navigate(moved, world.google.base_url), "invalid_state")

    async def test_a_wrong_nonce_is_refused(self, world: World, owner_conn: Any) -> None:
        world.google.user = google_user()
        world.google.nonce = "a-nonce-from-another-sign-in"
        since = await mark(owner_conn)
        visit, browser = await world.sign_in()
        refused(visit, "sso_failed")
        assert browser.cookie("archomata_refresh") is None
        failed = await entries(owner_conn, since, "auth.login.failed")
        assert [r["details"]["reason"] for r in failed] == ["invalid_id_token:invalid_claim:nonce"]

    @pytest.mark.parametrize(("audience", "azp"), [
        ("another-client", GOOGLE_CLIENT_ID),      # authlib's default would accept this
        ("another-client", None),
        ([GOOGLE_CLIENT_ID, "another-client"], GOOGLE_CLIENT_ID),
    ], ids=["azp-names-us", "no-azp", "several-audiences"])
    async def test_an_id_token_for_another_audience_is_refused(
            self, world: World, owner_conn: Any, audience: Any, azp: str | None) -> None:
        world.google.user = google_user()
        world.google.audience, world.google.azp = audience, azp
        since = await mark(owner_conn)
        refused((await world.sign_in())[0], "sso_failed")
        failed = await entries(owner_conn, since, "auth.login.failed")
        assert [r["details"]["reason"] for r in failed] == ["invalid_id_token:invalid_claim:aud"]

    async def test_our_own_azp_with_our_audience_is_fine(self, world: World) -> None:
        world.google.user = google_user()
        world.google.azp = GOOGLE_CLIENT_ID
        assert (await world.sign_in())[0].url == f"{FRONTEND}/dashboard"

    async def test_a_token_signed_by_another_key_under_a_known_kid_is_refused(
            self, world: World) -> None:
        world.google.user = google_user()
        world.google.sign_with = RSAKey.generate_key(
            2048, parameters={"kid": world.google.key.kid, "alg": "RS256"}, private=True)
        refused((await world.sign_in())[0], "sso_failed")

    @pytest.mark.parametrize("next_path", [
        "https://evil.example/", "//evil.example", "/\\evil.example", "javascript:alert(1)",
        "http:/evil.example", "@evil.example", "evil", "/a b", "/\u00e9", "/ok\\..",
    ])
    async def test_a_next_that_is_not_a_frontend_path_is_refused(
            self, world: World, next_path: str) -> None:
        world.google.user = google_user()
        visit, browser = await world.sign_in(next_path=next_path)
        refused(visit, "invalid_next")
        assert visit.hops == [world.login_url(next_path=next_path)]  # never left for the IdP
        assert browser.cookie("archomata_sso") is None

    @pytest.mark.parametrize("next_path", ["/", "/orders/42?view=full#top", "/a:b@c"])
    async def test_a_frontend_path_is_followed(self, world: World, next_path: str) -> None:
        world.google.user = google_user()
        assert (await world.sign_in(next_path=next_path))[0].url == f"{FRONTEND}{next_path}"

    async def test_without_next_the_spa_home_is_used(self, world: World) -> None:
        world.google.user = google_user()
        assert (await world.sign_in(next_path=None))[0].url == f"{FRONTEND}/"


class TestProviderKeys:
    async def test_an_unknown_kid_makes_one_fetch_of_the_jwks(self, world: World) -> None:
        world.google.user = google_user()
        assert (await world.sign_in())[0].url == f"{FRONTEND}/dashboard"
        assert (world.google.discovery_fetches, world.google.jwks_fetches) == (1, 1)
        assert (await world.sign_in())[0].url == f"{FRONTEND}/dashboard"
        assert world.google.jwks_fetches == 1  # cached
        world.google.rotate_key()
        assert (await world.sign_in())[0].url == f"{FRONTEND}/dashboard"
        assert (world.google.discovery_fetches, world.google.jwks_fetches) == (1, 2)

    async def test_callbacks_with_unknown_kids_refetch_at_most_once_a_minute(
            self, world: World) -> None:
        world.google.user = google_user()
        assert (await world.sign_in())[0].url == f"{FRONTEND}/dashboard"
        world.google.sign_with = RSAKey.generate_key(
            2048, parameters={"kid": "k-made-up", "alg": "RS256"}, private=True)
        for visit, _ in await asyncio.gather(*(world.sign_in() for _ in range(12))):
            refused(visit, "sso_failed")
        for _ in range(4):
            refused((await world.sign_in())[0], "sso_failed")
        assert world.google.jwks_fetches == 2  # the first, and one refetch for all 16

    async def test_a_provider_without_a_client_id_answers_404(
            self, aiohttp_server: Any, environ: dict[str, str],
            providers: tuple[OidcProvider, OidcProvider]) -> None:
        world = await start_world(aiohttp_server, environ, providers, enabled=("google",))
        try:
            for path in ("azure/login", "azure/callback?state=x&code=y", "github/login"):
                response = await world.http.get(f"{world.service}/api/v1/auth/sso/{path}",
                                                allow_redirects=False)
                assert response.status == 404
                assert (await response.json())["code"] == "not_found"
            world.google.user = google_user()
            assert (await world.sign_in())[0].url == f"{FRONTEND}/dashboard"
        finally:
            await world.http.close()


class TestIdentities:
    async def test_the_last_sign_in_method_cannot_be_unlinked(
            self, world: World, owner_conn: Any) -> None:
        world.google.user = google_user()
        _, browser = await world.sign_in()
        me = await world.refresh(browser)
        auth = {"Authorization": f"Bearer {me['access_token']}"}
        items = (await (await world.http.get(f"{world.service}/api/v1/me/identities",
                                             headers=auth)).json())["items"]
        url = f"{world.service}/api/v1/me/identities/{items[0]['id']}"
        response = await world.http.delete(url, headers=auth)
        assert response.status == 409
        assert (await response.json())["code"] == "last_sign_in_method"

        # A second identity (Azure, same verified address) makes the first removable.
        world.azure.user = azure_user(email=world.google.user.email, xms_edov=True)
        assert (await world.sign_in("azure"))[0].url == f"{FRONTEND}/dashboard"
        since = await mark(owner_conn)
        assert (await world.http.delete(url, headers=auth)).status == 204
        left = (await (await world.http.get(f"{world.service}/api/v1/me/identities",
                                            headers=auth)).json())["items"]
        assert [i["provider"] for i in left] == ["azure"]
        updated = await entries(owner_conn, since, "user.updated")
        assert [(r["resource_type"], r["details"]) for r in updated] == [
            ("user_identity", {"change": "sso_identity_unlinked", "provider": "google"})]
        last = f"{world.service}/api/v1/me/identities/{left[0]['id']}"
        assert (await world.http.delete(last, headers=auth)).status == 409

    async def test_a_password_lets_the_only_identity_go(
            self, world: World, client: Any, mail_sink: Any) -> None:
        email, password, _ = await register(client, mail_sink)
        world.google.user = google_user(email=email)
        await world.sign_in()
        me = await login(client, email, password)
        items = (await (await client.get("/api/v1/me/identities",
                                         headers=me.auth)).json())["items"]
        assert len(items) == 1
        assert (await client.delete(f"/api/v1/me/identities/{items[0]['id']}",
                                    headers=me.auth)).status == 204
        assert (await (await client.get("/api/v1/me/identities",
                                        headers=me.auth)).json())["items"] == []

    async def test_someone_elses_identity_is_not_found(
            self, world: World, client: Any, mail_sink: Any) -> None:
        world.google.user = google_user()
        _, browser = await world.sign_in()
        owner = await world.refresh(browser)
        items = (await (await world.http.get(
            f"{world.service}/api/v1/me/identities",
            headers={"Authorization": f"Bearer {owner['access_token']}"})).json())["items"]
        email, password, _ = await register(client, mail_sink)
        stranger = await login(client, email, password)
        for identity_id in (items[0]["id"], str(uuid4()), "not-a-uuid"):
            response = await client.delete(f"/api/v1/me/identities/{identity_id}",
                                           headers=stranger.auth)
            assert response.status == 404

    async def test_identities_need_authentication(self, client: Any) -> None:
        assert (await client.get("/api/v1/me/identities")).status == 401


def _fullwidth(text: str) -> str:
    return "".join(chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else c for c in text)


class TestLinkingSpelling:
    """The lookup folds `ß` to `ss`, fullwidth to ASCII and case; a link needs the same
    mailbox (users.same_mailbox)."""

    def test_same_mailbox_is_ascii_case_and_canonical_equivalence_only(self) -> None:
        assert same_mailbox("Ann.Lee@Example.TEST", " ann.lee@example.test")
        assert same_mailbox("jos\u00e9@example.test", "jose\u0301@example.test")  # NFC
        for other in ("straße@example.test", _fullwidth("strasse@example.test"),
                      "\ufb06rasse@example.test"):  # the `st` ligature
            assert not same_mailbox("strasse@example.test", other), other
        assert not same_mailbox("\u0130lk@example.test", "i\u0307lk@example.test")

    @pytest.mark.parametrize("spelling", [
        lambda local: f"straße-{local}@example.test",
        lambda local: _fullwidth(f"strasse-{local}@example.test"),
    ])
    async def test_a_verified_account_is_not_linked_to_a_look_alike_mailbox(
            self, world: World, client: Any, mail_sink: Any, owner_conn: Any,
            spelling: Any) -> None:
        local = secrets.token_hex(4)
        email, password, user = await register(client, mail_sink,
                                                email=f"strasse-{local}@example.test")
        world.google.user = google_user(email=spelling(local))
        since = await mark(owner_conn)
        refused((await world.sign_in())[0], "email_conflict")
        assert await owner_conn.fetchval("select count(*) from user_identities "
                                         "where user_id = $1", UUID(user["id"])) == 0
        failed = await entries(owner_conn, since, "auth.login.failed")
        assert [r["details"]["reason"] for r in failed] == ["email_spelled_differently"]
        await login(client, email, password)

    async def test_an_unverified_account_is_not_taken_over_by_a_look_alike_mailbox(
            self, world: World, client: Any, mail_sink: Any, owner_conn: Any) -> None:
        local = secrets.token_hex(4)
        email = f"strasse-{local}@example.test"
        _, password, user = await register(client, mail_sink, email=email, verify=False)
        world.google.user = google_user(email=f"STRAßE-{local}@example.test")
        refused((await world.sign_in())[0], "email_conflict")
        row = await owner_conn.fetchrow("select password_hash, email_verified_at from users "
                                        "where id = $1", UUID(user["id"]))
        assert row["password_hash"] is not None and row["email_verified_at"] is None
        answer = await client.post("/api/v1/auth/login",
                                   json={"email": email, "password": password})
        assert (await answer.json())["code"] == "email_not_verified"  # nothing was wiped

"""The OpenID client on its own: discovery and key caching, the ID token checks, and every
way a provider can answer badly. Tokens come from the loopback provider of
tests/oidc_provider.py, bent where a test needs it."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from joserfc import jwt
from joserfc.jwk import OctKey

from archomata.config import Secret, SsoProvider
from archomata.identity import oidc
from archomata.identity.oidc import OidcClient, SsoError, asserted
from archomata.identity.sso_state import LoginStates, new_login, safe_next
from archomata.ops.devservers import free_port
from tests.oidc_provider import Grant, IdpUser, OidcProvider, new_key

REDIRECT = "http://127.0.0.1:8080/api/v1/auth/sso/google/callback"


@pytest.fixture
async def idp() -> AsyncIterator[OidcProvider]:
    provider = OidcProvider("google", "client-1", secrets.token_urlsafe(24))
    await provider.start()
    yield provider
    await provider.close()


@pytest.fixture
async def azure() -> AsyncIterator[OidcProvider]:
    provider = OidcProvider("azure", "client-2", secrets.token_urlsafe(24))
    await provider.start()
    yield provider
    await provider.close()


def client_for(idp: OidcProvider, name: str | None = None) -> OidcClient:
    return OidcClient(SsoProvider(name or idp.flavour, idp.client_id,
                                  Secret(idp.client_secret), idp.metadata_url), REDIRECT)


def grant(idp: OidcProvider, user: IdpUser | None = None, nonce: str = "n-1") -> Grant:
    return Grant(idp.client_id, REDIRECT, nonce, "", user or IdpUser(email="a@example.test"),
                 time.time())


def token(idp: OidcProvider, **overrides: Any) -> dict[str, Any]:
    return {"id_token": idp.id_token(grant(idp, **overrides), "access-1"),
            "access_token": "access-1"}


async def reason(coro: Any) -> str:
    with pytest.raises(SsoError) as caught:
        await coro
    return caught.value.reason


class TestIdTokens:
    async def test_a_good_token_passes(self, idp: OidcProvider) -> None:
        claims = await client_for(idp).validate_id_token(token(idp), "n-1")
        assert claims["aud"] == idp.client_id

    async def test_a_token_without_a_nonce_is_refused(self, idp: OidcProvider) -> None:
        bare = {"iss": idp.issuer, "aud": idp.client_id, "sub": "s", "iat": int(time.time()),
                "exp": int(time.time()) + 60}
        signed = jwt.encode({"alg": "RS256", "kid": idp.key.kid}, bare, idp.key)
        assert await reason(client_for(idp).validate_id_token({"id_token": signed}, "n-1")) \
            == "invalid_id_token:missing_claim:nonce"

    async def test_an_expired_token_is_refused(self, idp: OidcProvider) -> None:
        claims = {"iss": idp.issuer, "aud": idp.client_id, "sub": "s", "nonce": "n-1",
                  "iat": int(time.time()) - 900, "exp": int(time.time()) - 600}
        signed = jwt.encode({"alg": "RS256", "kid": idp.key.kid}, claims, idp.key)
        assert await reason(client_for(idp).validate_id_token({"id_token": signed}, "n-1")) \
            == "invalid_id_token:expired_token:exp"

    async def test_an_hmac_token_keyed_with_anything_is_refused(self, idp: OidcProvider) -> None:
        key = OctKey.import_key(secrets.token_bytes(32), {"kid": idp.key.kid})
        claims = {"iss": idp.issuer, "aud": idp.client_id, "sub": "s", "nonce": "n-1",
                  "iat": int(time.time()), "exp": int(time.time()) + 60}
        signed = jwt.encode({"alg": "HS256", "kid": idp.key.kid}, claims, key)
        assert (await reason(client_for(idp).validate_id_token({"id_token": signed}, "n-1"))
                ).startswith("invalid_id_token:")

    async def test_garbage_is_refused(self, idp: OidcProvider) -> None:
        assert (await reason(client_for(idp).validate_id_token({"id_token": "a.b.c"}, "n")
                             )).startswith("invalid_id_token:")

    async def test_another_issuer_is_refused(self, idp: OidcProvider) -> None:
        claims = {"iss": "https://evil.example", "aud": idp.client_id, "sub": "s",
                  "nonce": "n-1", "iat": int(time.time()), "exp": int(time.time()) + 60}
        signed = jwt.encode({"alg": "RS256", "kid": idp.key.kid}, claims, idp.key)
        assert await reason(client_for(idp).validate_id_token({"id_token": signed}, "n-1")) \
            == "invalid_id_token:invalid_claim:iss"

    async def test_azure_issuer_must_name_the_tokens_own_tenant(
            self, azure: OidcProvider) -> None:
        user = IdpUser(email="a@example.test")
        claims = {"iss": azure.issuer_for(IdpUser(email=None)), "aud": azure.client_id,
                  "sub": "s", "nonce": "n-1", "tid": user.tid, "oid": user.oid,
                  "iat": int(time.time()), "exp": int(time.time()) + 60}
        signed = jwt.encode({"alg": "RS256", "kid": azure.key.kid}, claims, azure.key)
        client = client_for(azure)
        assert await reason(client.validate_id_token({"id_token": signed}, "n-1")) \
            == "invalid_id_token:invalid_claim:iss"
        good = await client.validate_id_token(token(azure, user=user), "n-1")
        assert good["iss"] == azure.issuer_for(user)

    async def test_google_bare_issuer_is_accepted_only_for_google(self, idp: OidcProvider) -> None:
        client = client_for(idp)
        metadata = await client.metadata()
        client._metadata = {**metadata, "issuer": "https://accounts.google.com"}
        claims = {"iss": "accounts.google.com", "aud": idp.client_id, "sub": "s",
                  "nonce": "n-1", "iat": int(time.time()), "exp": int(time.time()) + 60}
        signed = jwt.encode({"alg": "RS256", "kid": idp.key.kid}, claims, idp.key)
        assert (await client.validate_id_token({"id_token": signed}, "n-1"))["sub"] == "s"

    async def test_a_subject_is_required(self, azure: OidcProvider) -> None:
        claims = {"iss": azure.issuer_for(IdpUser(email=None, tid="t")), "aud": azure.client_id,
                  "sub": "s", "nonce": "n-1", "tid": "t", "iat": int(time.time()),
                  "exp": int(time.time()) + 60}
        signed = jwt.encode({"alg": "RS256", "kid": azure.key.kid}, claims, azure.key)
        client = client_for(azure)

        async def exchange(code: str, verifier: str) -> dict[str, Any]:
            return {"id_token": signed}
        client.exchange = exchange  # type: ignore[method-assign]
        assert await reason(client.sign_in("c", "v", "n-1")) == \
            "invalid_id_token:subject_missing"


class TestClaims:
    @pytest.mark.parametrize(("value", "expected"), [
        (True, True), ("true", True), ("True", True), ("1", True),
        (False, False), ("false", False), (None, False), (1, False), ("yes", False), ([], False),
    ])
    def test_asserted_is_a_clear_yes_only(self, value: Any, expected: bool) -> None:
        assert asserted(value) is expected


class _Docs:
    """A provider that answers whatever a test puts here."""

    def __init__(self) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.2:{self.port}"
        self.answers: dict[str, tuple[int, bytes]] = {}

    async def handle(self, request: web.Request) -> web.Response:
        status, body = self.answers.get(request.path, (404, b"{}"))
        return web.Response(status=status, body=body, content_type="application/json")

    def metadata(self, **fields: Any) -> bytes:
        import json
        return json.dumps({"issuer": self.base, "authorization_endpoint": f"{self.base}/a",
                           "token_endpoint": f"{self.base}/token",
                           "jwks_uri": f"{self.base}/jwks", **fields}).encode()


@pytest.fixture
async def docs() -> AsyncIterator[_Docs]:
    d = _Docs()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", d.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.2", d.port).start()
    yield d
    await runner.cleanup()


def docs_client(docs: _Docs) -> OidcClient:
    return OidcClient(SsoProvider("google", "c", Secret("s3cret-for-tests"),
                                  f"{docs.base}/meta"), REDIRECT)


class TestProviderAnswers:
    async def test_an_unreachable_provider(self) -> None:
        client = OidcClient(SsoProvider("google", "c", Secret("s"),
                                        f"http://127.0.0.2:{free_port()}/meta"), REDIRECT)
        with pytest.raises(SsoError) as caught:
            await client.metadata()
        assert (caught.value.code, caught.value.reason) == ("sso_unavailable",
                                                            "provider_unreachable")

    @pytest.mark.parametrize(("status", "body", "expected"), [
        (500, b"{}", "provider_document_status_500"),
        (200, b"not json", "provider_document_not_json"),
        (200, b"[1, 2]", "provider_document_not_json"),
        (200, b" " * (600 * 1024), "provider_document_too_large"),
        (200, b'{"issuer": "x"}', "provider_metadata_incomplete"),
    ])
    async def test_bad_discovery_documents(self, docs: _Docs, status: int, body: bytes,
                                           expected: str) -> None:
        docs.answers["/meta"] = (status, body)
        assert await reason(docs_client(docs).metadata()) == expected

    async def test_a_bad_key_set(self, docs: _Docs) -> None:
        docs.answers["/meta"] = (200, docs.metadata())
        docs.answers["/jwks"] = (200, b'{"nokeys": []}')
        assert await reason(docs_client(docs).validate_id_token({"id_token": "a.b.c"}, "n")) \
            == "provider_jwks_invalid"

    async def test_the_token_endpoint_answers(self, docs: _Docs) -> None:
        docs.answers["/meta"] = (200, docs.metadata(
            token_endpoint_auth_methods_supported=["client_secret_post"]))
        client = docs_client(docs)
        docs.answers["/token"] = (400, b'{"error": "invalid_grant"}')
        assert await reason(client.exchange("code", "verifier")) == "token_endpoint_status_400"
        docs.answers["/token"] = (200, b'{"access_token": "x"}')
        assert await reason(client.exchange("code", "verifier")) == \
            "token_response_without_id_token"
        docs.answers["/token"] = (200, b'{"id_token": "x.y.z"}')
        assert (await client.exchange("code", "verifier"))["id_token"] == "x.y.z"

    async def test_a_token_endpoint_that_takes_no_client_secret(self, docs: _Docs) -> None:
        docs.answers["/meta"] = (200, docs.metadata(
            token_endpoint_auth_methods_supported=["private_key_jwt"]))
        assert await reason(docs_client(docs).exchange("code", "verifier")) == \
            "no_supported_client_auth_method"

    async def test_an_unreachable_token_endpoint(self, docs: _Docs) -> None:
        docs.answers["/meta"] = (200, docs.metadata(
            token_endpoint=f"http://127.0.0.2:{free_port()}/token"))
        assert await reason(docs_client(docs).exchange("code", "verifier")) == \
            "token_endpoint_unreachable"


class TestNext:
    @pytest.mark.parametrize("value", [None, ""])
    def test_nothing_means_the_spa_home(self, value: str | None) -> None:
        assert safe_next(value) == "/"

    def test_a_very_long_path_is_refused(self) -> None:
        with pytest.raises(SsoError):
            safe_next("/" + "a" * 2000)


class TestStates:
    async def test_a_state_is_taken_once(self, redis_server: Any) -> None:
        from redis.asyncio import Redis
        redis = Redis.from_url(redis_server.url)
        try:
            states = LoginStates(redis)
            login = new_login("google", "/x")
            await states.put(login.state, login.pending)
            assert await states.take(login.state) == login.pending
            assert await states.take(login.state) is None
            assert await states.take("") is None
            assert await states.take("s" * 300) is None
            assert login.pending.bound_to(login.binding_cookie)
            assert not login.pending.bound_to(None)
            assert not login.pending.bound_to("another-browser")
        finally:
            await redis.aclose()


class TestKeyRefetch:
    """A token naming a kid the JWKS lacks refetches it at most once a minute per
    provider: neither a burst nor a stream of made-up kids reaches the provider more."""

    async def test_unknown_kids_refetch_the_jwks_at_most_once_a_minute(
            self, idp: OidcProvider, monkeypatch: pytest.MonkeyPatch) -> None:
        client = client_for(idp)
        assert (await client.validate_id_token(token(idp), "n-1"))["sub"]
        assert idp.jwks_fetches == 1
        idp.sign_with = new_key()  # a kid the provider never published

        async def refused() -> str:
            return await reason(client.validate_id_token(token(idp), "n-1"))

        burst = await asyncio.gather(*(refused() for _ in range(50)))
        assert set(burst) == {"invalid_id_token:invalid_key_id"}, set(burst)
        assert idp.jwks_fetches == 2  # one for the whole burst
        for _ in range(20):
            await refused()
        assert idp.jwks_fetches == 2  # and none for those that followed within the minute
        monkeypatch.setattr(oidc, "JWKS_REFETCH_SECONDS", 0.3)
        await asyncio.sleep(0.35)
        await asyncio.gather(*(refused() for _ in range(10)))
        assert idp.jwks_fetches == 3  # the minute over: one more
        # A real rotation is still followed once the minute allows it.
        idp.sign_with = None
        idp.rotate_key()
        await asyncio.sleep(0.35)
        assert (await client.validate_id_token(token(idp), "n-1"))["sub"]
        assert idp.jwks_fetches == 4

"""The account's own second-factor counter: wrong answers on the challenge, step-up and
the enrolment's confirmation add up whatever the password, the challenge, the address or
how many are sent at once (each is reserved before it is judged); after five, each
further answer waits (1 s, doubling) and is refused 429 unjudged; only a right answer
clears it. Redis down: 503, never an answer judged uncounted."""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import time
import uuid
from typing import Any

import pytest
from redis.asyncio import Redis

from archomata.app import create_app
from archomata.config import Config
from archomata.errors import RateLimited, ServiceUnavailable
from archomata.identity.mfa.throttle import FREE_ANSWERS, SecondFactorThrottle
from tests.factories import Session, signed_up
from tests.identity.test_mfa import VERIFY, challenge, code, enrol
from tests.secret_scan import remember

STEP_UP = "/api/v1/auth/step-up"
CONFIRM = "/api/v1/me/mfa/totp/confirm"
BURST = 50


@pytest.fixture
async def proxied(aiohttp_client: Any, config: Config) -> Any:
    """The service behind a trusted proxy: each request may claim its own address."""
    return await aiohttp_client(create_app(dataclasses.replace(
        config, trusted_proxies=(ipaddress.ip_network("127.0.0.0/8"),))))


def address(n: int) -> dict[str, str]:
    return {"X-Forwarded-For": f"198.51.{n // 250}.{n % 250 + 1}"}


async def judged(owner_conn: Any, user_id: uuid.UUID) -> int:
    """Wrong answers that were judged: each leaves one `mfa.challenge_failed` entry."""
    count: int = await owner_conn.fetchval(
        "select count(*) from audit_log where action = 'mfa.challenge_failed' "
        "and resource_id = $1", str(user_id))
    return count


async def sign_in_with_code(client: Any, me: Session, secret: str) -> Any:
    return await client.post(VERIFY, json={"mfa_token": await challenge(client, me),
                                           "code": code(secret, 1)})


class TestTheLoginAndGuessLoop:
    async def test_a_right_password_does_not_buy_more_guesses(
            self, client: Any, mail_sink: Any) -> None:
        me = await signed_up(client, mail_sink)
        secret, _ = await enrol(client, me)
        token = await challenge(client, me)
        for _ in range(FREE_ANSWERS - 1):
            wrong = await client.post(VERIFY, json={"mfa_token": token, "code": "000000"})
            assert wrong.status == 401
        # Signing in again (the password is right) starts a challenge, not a new count.
        token = await challenge(client, me)
        fifth = await client.post(VERIFY, json={"mfa_token": token, "code": "000000"})
        assert fifth.status == 401
        held = await client.post(VERIFY, json={"mfa_token": token, "code": "000000"})
        assert held.status == 429 and int(held.headers["Retry-After"]) >= 1
        assert (await held.json())["code"] == "rate_limited"
        # A new challenge, and the right code itself, wait too: refused before judging.
        right = await client.post(VERIFY, json={"mfa_token": await challenge(client, me),
                                                "code": code(secret, 1)})
        assert right.status == 429
        await asyncio.sleep(1.1)
        assert (await client.post(VERIFY, json={"mfa_token": token,
                                                "code": "000000"})).status == 401
        # That wrong answer after the wait started the next one (twice as long: TestTheCounter).
        again = await client.post(VERIFY, json={"mfa_token": token, "code": code(secret, 1)})
        assert again.status == 429 and int(again.headers["Retry-After"]) >= 1

    async def test_a_right_answer_clears_the_counter(self, client: Any,
                                                     mail_sink: Any) -> None:
        me = await signed_up(client, mail_sink)
        secret, _ = await enrol(client, me)
        token = await challenge(client, me)
        for _ in range(FREE_ANSWERS - 1):
            assert (await client.post(VERIFY, json={"mfa_token": token,
                                                    "code": "000000"})).status == 401
        assert (await sign_in_with_code(client, me, secret)).status == 200
        token = await challenge(client, me)
        statuses = [(await client.post(VERIFY, json={"mfa_token": token, "code": "000000"})
                     ).status for _ in range(FREE_ANSWERS - 1)]
        assert statuses == [401] * (FREE_ANSWERS - 1)  # five free again, not one


class TestBurstsJudgeNoMoreThanTheLimit:
    async def test_concurrent_wrong_codes_on_many_challenges_and_addresses(
            self, proxied: Any, mail_sink: Any, owner_conn: Any) -> None:
        me = await signed_up(proxied, mail_sink)
        secret, _ = await enrol(proxied, me)
        tokens = [await challenge(proxied, me) for _ in range(5)]
        answers = await asyncio.gather(*(proxied.post(
            VERIFY, json={"mfa_token": tokens[n % 5], "code": f"{n:06d}"},
            headers=address(n)) for n in range(BURST)))
        statuses = [a.status for a in answers]
        assert await judged(owner_conn, me.user_id) == FREE_ANSWERS
        assert statuses.count(401) == FREE_ANSWERS
        assert set(statuses) <= {401, 429}, statuses
        assert all("Retry-After" in a.headers for a in answers if a.status == 429)
        refused = await proxied.post(VERIFY, json={"mfa_token": tokens[0],
                                                   "code": code(secret, 1)},
                                     headers=address(99))
        assert refused.status == 429

    async def test_concurrent_wrong_step_up_codes(self, proxied: Any, mail_sink: Any,
                                                   owner_conn: Any) -> None:
        me = await signed_up(proxied, mail_sink)
        secret, _ = await enrol(proxied, me)
        answers = await asyncio.gather(*(proxied.post(
            STEP_UP, json={"code": f"{n:06d}"}, headers={**me.auth, **address(n)})
            for n in range(BURST)))
        statuses = [a.status for a in answers]
        assert await judged(owner_conn, me.user_id) == FREE_ANSWERS
        assert statuses.count(401) == FREE_ANSWERS and statuses.count(429) == BURST - 5
        right = await proxied.post(STEP_UP, json={"code": code(secret, 1)}, headers=me.auth)
        assert right.status == 429

    async def test_concurrent_wrong_confirmation_codes_of_a_stolen_token(
            self, proxied: Any, mail_sink: Any, owner_conn: Any) -> None:
        me = await signed_up(proxied, mail_sink)
        started = await proxied.post("/api/v1/me/mfa/totp", headers=me.auth,
                                     json={"current_password": me.password})
        secret = (await started.json())["secret"]
        remember(secret)
        answers = await asyncio.gather(*(proxied.post(
            CONFIRM, json={"code": f"{n:06d}"}, headers={**me.auth, **address(n)})
            for n in range(BURST)))
        statuses = [a.status for a in answers]
        assert await judged(owner_conn, me.user_id) == FREE_ANSWERS
        assert statuses.count(401) == FREE_ANSWERS and statuses.count(429) == BURST - 5
        entries = await owner_conn.fetch(
            "select org_id, details->>'via' as via from audit_log "
            "where action = 'mfa.challenge_failed' "
            "and resource_id = $1", str(me.user_id))
        assert {(e["org_id"], e["via"]) for e in entries} == \
            {(me.org_id, "enrolment")}
        # The owner's own right code waits out the wait, then confirms.
        assert (await proxied.post(CONFIRM, json={"code": code(secret)},
                                   headers=me.auth)).status == 429
        await asyncio.sleep(1.1)
        confirmed = await proxied.post(CONFIRM, json={"code": code(secret)}, headers=me.auth)
        assert confirmed.status == 200, await confirmed.text()


class TestEveryWayAddsUp:
    async def test_the_challenge_and_step_up_share_one_counter(
            self, client: Any, mail_sink: Any) -> None:
        me = await signed_up(client, mail_sink)
        secret, _ = await enrol(client, me)
        for _ in range(2):
            assert (await client.post(STEP_UP, json={"code": "000000"},
                                      headers=me.auth)).status == 401
        token = await challenge(client, me)
        for _ in range(FREE_ANSWERS - 2):
            assert (await client.post(VERIFY, json={"mfa_token": token,
                                                    "recovery_code": "aaaa-bbbb-cccc-dddd"})
                    ).status == 401
        assert (await client.post(STEP_UP, json={"code": code(secret, 1)},
                                  headers=me.auth)).status == 429


class TestTheCounter:
    async def test_waits_double_from_one_second(self, config: Config) -> None:
        redis = Redis.from_url(config.redis_url.reveal())
        try:
            throttle, user = SecondFactorThrottle(redis), uuid.uuid4()
            for _ in range(FREE_ANSWERS):
                await throttle.reserve(user)
            with pytest.raises(RateLimited) as first:
                await throttle.reserve(user)
            assert first.value.headers["Retry-After"] == "1"
            await asyncio.sleep(1.05)
            await throttle.reserve(user)
            with pytest.raises(RateLimited) as second:
                await throttle.reserve(user)
            assert second.value.headers["Retry-After"] == "2"
            await throttle.proven(user)
            for _ in range(FREE_ANSWERS):
                await throttle.reserve(user)
        finally:
            await redis.aclose()

    async def test_the_wait_stops_at_fifteen_minutes(self, config: Config) -> None:
        redis = Redis.from_url(config.redis_url.reveal())
        try:
            user = uuid.uuid4()
            answers, wait = f"mfa:answers:{{{user}}}", f"mfa:answers:{{{user}}}:wait"
            await redis.set(answers, 40)  # long past the free answers
            await SecondFactorThrottle(redis).reserve(user)
            assert 899_000 < await redis.pttl(wait) <= 900_000
            # The count outlives the wait it imposed: sitting it out does not reset it.
            assert await redis.pttl(answers) > await redis.pttl(wait)
        finally:
            await redis.aclose()

    async def test_redis_down_refuses_to_judge(self, nowhere: Any) -> None:
        started = time.monotonic()
        with pytest.raises(ServiceUnavailable):
            await SecondFactorThrottle(nowhere).reserve(uuid.uuid4())
        assert time.monotonic() - started < 5


class TestOnlyAsciiDigits:
    # Fullwidth, Arabic-Indic, superscript, Extended Arabic-Indic digits, one mixed in.
    SPELLINGS = ("\uff11\uff12\uff13\uff14\uff15\uff16",
                 "\u0660\u0661\u0662\u0663\u0664\u0665",
                 "\u00b9\u00b2\u00b3\u2074\u2075\u2076",
                 "\u06f1\u06f2\u06f3\u06f4\u06f5\u06f6", "12345\uff16")

    async def test_other_digits_are_a_wrong_code_on_every_route(
            self, client: Any, mail_sink: Any, owner_conn: Any) -> None:
        me = await signed_up(client, mail_sink)
        started = await client.post("/api/v1/me/mfa/totp", headers=me.auth,
                                    json={"current_password": me.password})
        secret = (await started.json())["secret"]
        remember(secret)
        refused = await client.post(CONFIRM, json={"code": self.SPELLINGS[0]},
                                    headers=me.auth)
        assert refused.status == 401 and (await refused.json())["code"] == "invalid_mfa_code"
        assert (await client.post(CONFIRM, json={"code": code(secret)},
                                  headers=me.auth)).status == 200
        token = await challenge(client, me)
        for spelling in self.SPELLINGS[1:3]:
            answer = await client.post(VERIFY, json={"mfa_token": token, "code": spelling})
            assert answer.status == 401, await answer.text()
            assert (await answer.json())["code"] == "invalid_mfa_code"
        answer = await client.post(STEP_UP, json={"code": self.SPELLINGS[3]},
                                   headers=me.auth)
        assert answer.status == 401 and (await answer.json())["code"] == "invalid_mfa_code"
        assert await judged(owner_conn, me.user_id) == 4  # counted and audited alike

    async def test_odd_recovery_codes_are_wrong_never_an_error(
            self, client: Any, mail_sink: Any, owner_conn: Any) -> None:
        me = await signed_up(client, mail_sink)
        _, recovery = await enrol(client, me)
        token = await challenge(client, me)
        fullwidth = "".join(chr(ord(c) + 0xFEE0) if c != "-" else c for c in recovery[0])
        for odd in (fullwidth, "ǅ\u0301\u200d😀", "\ufeff" * 10):
            answer = await client.post(VERIFY, json={"mfa_token": token,
                                                     "recovery_code": odd})
            assert answer.status == 401, await answer.text()
        surrogate = await client.post(
            VERIFY, data=b'{"mfa_token": "%s", "recovery_code": "\\ud800abc"}'
            % token.encode(), headers={"Content-Type": "application/json"})
        assert surrogate.status in (400, 401, 422), await surrogate.text()

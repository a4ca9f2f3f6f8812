"""Nothing tells whether an address has an account: not the answer, not its time.

Each test times two kinds of request against the real service (PostgreSQL, Redis, SMTP),
one for an address with an account and one without, interleaved (so that the machine's
load, shared with other work, falls on both alike) and compares them: the median of the
differences within pairs must be within 1 ms (for a login, whose time is bcrypt's at the
configured cost: within 1 ms or a tenth of that time). What a route does after its
answer (archomata.web.later) is awaited between requests, outside the time measured, so
that one request's work does not land in the next one's time. A loaded machine may still
spread a run; the pair is measured again, up to three times, and must come within the
bound once. A route that does its per-account work before answering differs by
milliseconds in every run (the reset request: 7 ms against 4.6), and fails all three.
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any
from uuid import UUID

from archomata import keys
from archomata.app import create_app
from archomata.config import Config
from tests.factories import register, strong_password, unique_email

SAMPLES = 60
BOUND_SECONDS = 0.001
ROUNDS = 3

Timed = Callable[[], Awaitable[float]]


async def timed(client: Any, path: str, body: dict[str, Any], status: int) -> float:
    started = time.perf_counter()
    response = await client.post(path, json=body)
    elapsed = time.perf_counter() - started
    assert response.status == status, await response.text()
    await client.app[keys.LATER].drain(10)
    return elapsed


async def medians(first: Timed, second: Timed) -> tuple[float, float, float]:
    """The median times of SAMPLES of each, interleaved (each kind first every other
    time), and the median of the differences within each pair: two requests a moment
    apart meet the same load, which the pair's difference takes out."""
    times: tuple[list[float], list[float]] = ([], [])
    for i in range(SAMPLES):
        order = ((0, first), (1, second)) if i % 2 == 0 else ((1, second), (0, first))
        for kind, call in order:
            times[kind].append(await call())
    paired = statistics.median(a - b for a, b in zip(*times, strict=True))
    return statistics.median(times[0]), statistics.median(times[1]), paired


async def assert_alike(first: Timed, second: Timed, share: float = 0.0) -> None:
    """The medians within 1 ms, or within `share` of the second's (for a time that bcrypt
    makes, whose own spread on a loaded machine is milliseconds)."""
    seen = []
    for _ in range(ROUNDS):
        a, b, paired = await medians(first, second)
        if abs(paired) < max(BOUND_SECONDS, share * b):
            return
        seen.append((a, b, paired))
    raise AssertionError("apart in every run: " + ", ".join(
        f"{a * 1000:.2f} ms against {b * 1000:.2f} ms ({d * 1000:+.2f} ms a pair)"
        for a, b, d in seen))


class TestNoAccountOracle:
    async def test_a_reset_request_takes_as_long_for_a_real_address(
            self, client: Any, mail_sink: Any) -> None:
        email, _, user = await register(client, mail_sink)
        redis = client.app[keys.REDIS]

        async def real() -> float:
            # Past the per-account mail cool-down each time: the full work, every time.
            await redis.delete(f"mailed:password_reset:{UUID(user['id'])}")
            return await timed(client, "/api/v1/auth/password-reset/request",
                               {"email": email}, 202)

        async def unknown() -> float:
            return await timed(client, "/api/v1/auth/password-reset/request",
                               {"email": unique_email("nobody")}, 202)

        await assert_alike(real, unknown)
        assert len([m for m in mail_sink.to(email) if "reset" in m["Subject"].lower()]) \
            >= SAMPLES  # the real address's work was done each time, after the answer

    async def test_a_resend_takes_as_long_for_a_real_address(
            self, client: Any, mail_sink: Any) -> None:
        email, _, user = await register(client, mail_sink, verify=False)
        redis = client.app[keys.REDIS]

        async def real() -> float:
            await redis.delete(f"mailed:verify_email:{UUID(user['id'])}")
            return await timed(client, "/api/v1/auth/resend-verification",
                               {"email": email}, 202)

        async def unknown() -> float:
            return await timed(client, "/api/v1/auth/resend-verification",
                               {"email": unique_email("nobody")}, 202)

        await assert_alike(real, unknown)
        assert len([m for m in mail_sink.to(email) if "verify" in m["Subject"].lower()]) \
            > SAMPLES

    async def test_registering_a_taken_address_takes_as_long_as_a_new_one(
            self, client: Any, mail_sink: Any) -> None:
        email, _, _ = await register(client, mail_sink)

        async def register_as(address: str) -> float:
            return await timed(client, "/api/v1/auth/register", {
                "email": address, "password": strong_password(), "name": "Timed",
                "org_name": "Timed"}, 201)

        async def taken() -> float:
            return await register_as(email)

        async def new() -> float:
            return await register_as(unique_email("new"))

        await assert_alike(taken, new)

    async def test_a_wrong_password_on_an_older_cost_hash_takes_the_configured_cost(
            self, aiohttp_client: Any, config: Config, mail_sink: Any) -> None:
        # Registered at cost 4; the service then runs at cost 6 (four times the work),
        # with no login backoff in the way of fifty wrong passwords.
        assert config.bcrypt_rounds == 4
        dormant, _, _ = await register(await aiohttp_client(create_app(config)), mail_sink)
        raised = await aiohttp_client(create_app(dataclasses.replace(
            config, bcrypt_rounds=6, login_backoff_after=1000)))

        async def wrong_password() -> float:
            return await timed(raised, "/api/v1/auth/login",
                               {"email": dormant, "password": strong_password()}, 401)

        async def unknown_email() -> float:
            return await timed(raised, "/api/v1/auth/login",
                               {"email": unique_email("nobody"),
                                "password": strong_password()}, 401)

        # Before, the dormant account answered in a quarter of the time (cost 4 against 6):
        # 75% of the configured cost's time apart. Now within 1 ms, or 10% of that time.
        await assert_alike(wrong_password, unknown_email, share=0.1)

"""Signing in with a second factor beside signing in without, in the same run: the
password login (one bcrypt) against the password login then POST /auth/mfa/verify with a
TOTP code (still one bcrypt: the code is an HMAC and one short transaction). Eight
clients for each side in alternating rounds; throughput and median time to a session.
Target (issue 15): the ratio about 1.0x.

Each enrolled user's code is taken once per 30 s step, so the TOTP side signs in many
users in turn, each once per step.

Run: .venv/bin/python -m bench.login_mfa [--rounds 3] [--seconds 10]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable

import aiohttp
import asyncpg
import pyotp

from archomata.audit import AuditContext
from archomata.crypto import DataKeys
from archomata.db import create_pool
from archomata.identity.onboarding import create_user_with_org
from archomata.identity.passwords import hash_sync
from bench.lib import median, serve, stack

PASSWORD = "mfa-bench-password-123456"
USERS = 80
CLIENTS = 8


async def make_users(environ: dict[str, str], rounds: int) -> list[tuple[str, str]]:
    """One user without a second factor, then USERS with TOTP: (email, secret)."""
    password_hash = hash_sync(PASSWORD, rounds)
    keys = DataKeys(base64.b64decode(environ["ARCHOMATA_DATA_KEY"]))
    made = []
    pool = await create_pool(environ["ARCHOMATA_DATABASE_URL"], min_size=1, max_size=1)
    owner = await asyncpg.connect(environ["ARCHOMATA_DATABASE_OWNER_URL"])
    try:
        for i in range(USERS + 1):
            email = f"mfa{i}-{uuid.uuid4().hex[:6]}@bench.test"
            account = await create_user_with_org(
                pool, AuditContext.system(), email=email, name="Bench",
                password_hash=password_hash, org_name="Bench", verified=True)
            secret = pyotp.random_base32(32)
            if i:
                await owner.execute(
                    "insert into mfa_totp (user_id, secret_sealed, confirmed_at)"
                    " values ($1, $2, now())", account.user.id,
                    keys.encrypt(secret.encode(), b"archomata.mfa.totp:" + account.user.id.bytes))
            made.append((email, secret))
    finally:
        await owner.close()
        await pool.close()
    return made


async def plain_login(session: aiohttp.ClientSession, url: str, email: str) -> None:
    async with session.post(f"{url}/api/v1/auth/login",
                            json={"email": email, "password": PASSWORD}) as response:
        assert "access_token" in await response.json(), response.status


class TotpUsers:
    """Hands out an enrolled user whose code of this step is not taken yet."""

    def __init__(self, users: list[tuple[str, str]]) -> None:
        self.users, self.used = users, {email: -1 for email, _ in users}

    def take(self) -> tuple[str, str] | None:
        step = int(time.time()) // 30
        for email, secret in self.users:
            if self.used[email] < step:
                self.used[email] = step
                return email, pyotp.TOTP(secret).at(step * 30)
        return None


async def totp_login(session: aiohttp.ClientSession, url: str, users: TotpUsers) -> bool:
    taken = users.take()
    if taken is None:
        return False
    email, code = taken
    async with session.post(f"{url}/api/v1/auth/login",
                            json={"email": email, "password": PASSWORD}) as response:
        token = (await response.json())["mfa_token"]
    async with session.post(f"{url}/api/v1/auth/mfa/verify",
                            json={"mfa_token": token, "code": code}) as response:
        assert "access_token" in await response.json(), response.status
    return True


async def measure(url: str, seconds: float,
                  login: Callable[[aiohttp.ClientSession], Awaitable[object]]
                  ) -> tuple[float, float]:
    """(sessions per second, median seconds to a session) with CLIENTS at once."""
    times: list[float] = []
    deadline = time.monotonic() + seconds

    async def client() -> None:
        async with aiohttp.ClientSession() as session:
            while time.monotonic() < deadline:
                started = time.perf_counter()
                if await login(session) is False:
                    raise SystemExit("not enough enrolled users for this step: raise USERS")
                times.append(time.perf_counter() - started)

    began = time.monotonic()
    await asyncio.gather(*(client() for _ in range(CLIENTS)))
    return len(times) / (time.monotonic() - began), statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--cost", type=int, default=12, help="bcrypt's")
    args = parser.parse_args()
    figures: dict[str, list[tuple[float, float]]] = {"password": [], "password + TOTP": []}
    with stack(bcrypt_rounds=args.cost) as env:
        users = asyncio.run(make_users(env.environ, args.cost))
        plain_email, totp_users = users[0][0], TotpUsers(users[1:])
        with serve(env.environ, env.workdir) as url:
            sides = [("password", lambda s: plain_login(s, url, plain_email)),
                     ("password + TOTP", lambda s: totp_login(s, url, totp_users))]
            for round_no in range(1, args.rounds + 1):
                for name, login in sides if round_no % 2 else sides[::-1]:
                    rate, took = asyncio.run(measure(url, args.seconds, login))
                    figures[name].append((rate, took))
                    print(f"round {round_no} {name:15}: {rate:6.2f} sessions/s, "
                          f"median {took * 1000:7.1f} ms", flush=True)
    plain = [f[0] for f in figures["password"]]
    totp = [f[0] for f in figures["password + TOTP"]]
    plain_ms = median([f[1] for f in figures["password"]]) * 1000
    totp_ms = median([f[1] for f in figures["password + TOTP"]]) * 1000
    print(f"\nmedians over {args.rounds} rounds, {CLIENTS} clients, bcrypt cost {args.cost}:")
    print(f"  sessions/s: with TOTP {median(totp):.2f} / without {median(plain):.2f} = "
          f"{median(totp) / median(plain):.2f}x (target ~1.0x)")
    print(f"  median time to a session: with TOTP {totp_ms:.1f} / without {plain_ms:.1f} ms"
          f" = {totp_ms / plain_ms:.2f}x", flush=True)


if __name__ == "__main__":
    main()

"""Sessions: refresh-token families kept in Redis, rotated atomically by one Lua script.

A session holds its user, current org, times, IP, user agent and absolute expiry, plus the
SHA-256 of its current refresh token and of that token's parent. Redis never sees a
token, only hashes:

    sess:{sid}     hash   user_id, org_id, created_at, last_used_at, ip, user_agent,
                          expires_at, current, parent, rotated_at
    rt:{sha256}    string the sid of the family the token belongs (or belonged) to
    sessrt:{sid}   set    every token hash of the family, to delete them with it
    usess:{uid}    set    the user's session ids
    sessgone:{sid} string the family ended lately (a rebuild must not put it back)

Rotation derives the successor from the presented token with HMAC (a key derived from
the data key), so tabs that present the same parent inside the grace window all receive
the same successor without Redis ever storing a token. Presenting an older token, or the
parent after the window, revokes the whole family, on whichever route presents it.

Every write to a session runs in the script that checks the session is still live, so a
revocation is never undone by a write racing it.

PostgreSQL keeps every family too (archomata.identity.store.sessions: hashes only), one
statement after each script that changes one, so that when Redis loses its data the
rebuild puts the live families back (`restore`) before any token is accepted: no one is
signed out, and every revocation holds. A script that finds or changes a family by its
token first asks whether Redis has been rebuilt, and the store rebuilds it before
answering: a refresh or a logout never meets an empty Redis. A server that came back
with older data (a replica promoted behind its master, an old snapshot) is rebuilt too
(server_watch.py): the families PostgreSQL has ended are ended there, and those it holds
rotated later are written over.

The scripts (archomata.identity.session_scripts) that hand out a session also return the
issue instant of the access tokens minted from it, on the clock the user's token cut-off
is taken on (rv:user:{uid} `cut`, see revocation.py).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import StrEnum
from uuid import UUID

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from redis.asyncio import Redis

from archomata.config import Config
from archomata.identity import session_scripts as scripts
from archomata.identity.store import sessions as rows
from archomata.redis_boundary import redis_call

TOKEN_BYTES = 32


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def successor_key(config: Config) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None,
                info=b"archomata.refresh.successor.v1").derive(config.data_key.reveal())


def successor_of(key: bytes, token: str) -> str:
    digest = hmac.new(key, token.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


class Outcome(StrEnum):
    ROTATED = "rotated"
    SAME = "same"          # a parent inside the grace window: the current successor again
    REUSE = "reuse"        # an older token, or the parent too late: family revoked
    REVOKED = "revoked"    # the family is gone (logout, deleted, expired)
    FOREIGN = "foreign"    # a live token of another family than the one asked for
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class Session:
    id: UUID
    user_id: UUID
    org_id: UUID | None
    created_at: float
    last_used_at: float
    ip: str
    user_agent: str
    expires_at: float
    # The issue instant of access tokens minted from this view (see _INSTANT); 0 for a
    # view only read (a listing), which mints nothing.
    issued_us: int = 0
    amr: str = "pwd"  # how it was proven, comma separated: its tokens' `amr`
    mfa_at: float | None = None  # when its second factor was, if it was: their `mfa_at`


@dataclass(frozen=True, slots=True)
class Rotation:
    outcome: Outcome
    session: Session | None = None
    token: str | None = None
    # For a detected reuse: whose family was revoked, to audit it in the right org.
    revoked_user_id: UUID | None = None
    revoked_org_id: UUID | None = None
    revoked_session_id: UUID | None = None


def _unready(result: object) -> bool:
    """A script's answer that Redis has lost its data and is not yet rebuilt."""
    return isinstance(result, bytes | str) and _text(result) == "unready"


def _text(value: bytes | str | None) -> str:
    if value is None:
        return ""
    return value.decode() if isinstance(value, bytes) else value


def _session(sid: str, data: dict[bytes, bytes] | dict[str, str] | list[bytes],
             issued_us: int = 0) -> Session | None:
    if isinstance(data, list):  # a script's HGETALL: field, value, field, value...
        data = dict(zip(data[::2], data[1::2], strict=True))
    fields = {_text(k): _text(v) for k, v in data.items()}
    if not fields.get("user_id") or not fields.get("current"):
        return None
    return Session(UUID(sid), UUID(fields["user_id"]),
                   UUID(fields["org_id"]) if fields.get("org_id") else None,
                   float(fields["created_at"]), float(fields["last_used_at"]),
                   fields.get("ip", ""), fields.get("user_agent", ""),
                   float(fields["expires_at"]), issued_us, fields.get("amr") or "pwd",
                   float(fields["mfa_at"]) if fields.get("mfa_at") else None)


@dataclass(frozen=True, slots=True)
class Ended:
    """A family `end` revoked: whose it was, and whether the token that named it was a
    replayed one (a reuse, to audit as such)."""

    session_id: UUID
    user_id: UUID
    org_id: UUID | None
    stale_token: bool


class SessionStore:
    def __init__(self, redis: Redis, config: Config,
                 door: rows.UserDoor | None = None) -> None:
        self.redis = redis
        # Where families are kept as well: a user's transaction. None: Redis alone (tests).
        self.kept = door
        # Set by the app: the rebuilt marker's key, and what rebuilds Redis.
        self.ready_key = ""
        self.rebuild: Callable[[], Awaitable[None]] | None = None
        self.ttl = config.refresh_token_ttl_seconds
        self.grace = config.refresh_reuse_grace_seconds
        self._successor_key = successor_key(config)
        self._create = redis.register_script(scripts.CREATE)
        self._rotate = redis.register_script(scripts.ROTATE)
        self._move = redis.register_script(scripts.MOVE)
        self._prove = redis.register_script(scripts.PROVE)
        self._forget = redis.register_script(scripts.FORGET)
        self._end = redis.register_script(scripts.END)
        self._revoke_user = redis.register_script(scripts.REVOKE_USER)
        self._cut = redis.register_script(scripts.CUT)

    def on_unready(self, ready_key: str, rebuild: Callable[[], Awaitable[None]]) -> None:
        self.ready_key, self.rebuild = ready_key, rebuild

    async def _ready(self) -> None:
        if self.rebuild is not None:
            await self.rebuild()

    async def create(self, user_id: UUID, org_id: UUID | None, ip: str, user_agent: str,
                     amr: str = "pwd", mfa_at: float | None = None) -> tuple[Session, str]:
        """A new family, proven as `amr` says (and by a second factor at `mfa_at`);
        returns it and its first refresh token. Kept in PostgreSQL too: if it cannot be,
        the family ends and the sign-in answers 503."""
        token = secrets.token_urlsafe(TOKEN_BYTES)
        now = time.time()
        sid = uuid.uuid4()
        with redis_call():
            issued = await self._create(args=[
                str(sid), str(user_id), str(org_id) if org_id else "", repr(now), ip,
                user_agent[:256], repr(now + self.ttl), token_hash(token), self.ttl, amr,
                repr(mfa_at) if mfa_at is not None else ""])
        if self.kept is not None:
            try:
                await rows.insert(self.kept, sid, user_id, org_id, now, ip, user_agent[:256],
                                  now + self.ttl, token_hash(token), amr, mfa_at)
            except BaseException:
                await self.end(sid)
                raise
        return Session(sid, user_id, org_id, now, now, ip, user_agent[:256], now + self.ttl,
                       int(issued), amr, mfa_at), token

    async def rotate(self, token: str, ip: str, user_agent: str,
                     new_org: UUID | None = None, only: UUID | None = None) -> Rotation:
        """Rotates the family of `token` (moving it to `new_org`); with `only`, a token of
        another family is left alone (FOREIGN), unless it is a replay: a reuse revokes its
        family wherever it is presented."""
        successor = successor_of(self._successor_key, token)
        now = time.time()
        for ready_key in (self.ready_key, ""):  # once more, without asking, once rebuilt
            with redis_call():
                result = await self._rotate(args=[
                    token_hash(token), token_hash(successor), repr(now), self.grace,
                    str(new_org) if new_org else "", ip, user_agent[:256],
                    str(only) if only else "", ready_key])
            if _text(result[0]) != "unready":
                break
            await self._ready()
        outcome = Outcome(_text(result[0]))
        if outcome is Outcome.REUSE:
            user, org = _text(result[2]), _text(result[3])
            sid = UUID(_text(result[1]))
            if self.kept is not None and user:
                await rows.revoked(self.kept, UUID(user), [sid])
            return Rotation(outcome, revoked_session_id=sid,
                            revoked_user_id=UUID(user) if user else None,
                            revoked_org_id=UUID(org) if org else None)
        if outcome not in (Outcome.ROTATED, Outcome.SAME):
            return Rotation(outcome)
        session = _session(_text(result[1]), result[3], int(result[2]))
        if session is None:
            return Rotation(Outcome.REVOKED)
        if self.kept is not None and outcome is Outcome.ROTATED:
            await rows.rotated(self.kept, session.user_id, session.id, token_hash(successor),
                               token_hash(token), now, ip, user_agent[:256], new_org)
        elif self.kept is not None and new_org is not None:
            await rows.moved(self.kept, session.user_id, session.id, new_org)
        return Rotation(outcome, session, successor)

    async def prove_second_factor(self, sid: UUID, factor: str) -> Session | None:
        """Records a second factor proven now on a live session (step-up): its tokens and
        refreshes carry the new `mfa_at`. None when the session is gone."""
        now = time.time()
        with redis_call():
            result = await self._prove(args=[str(sid), factor, repr(now), repr(now)])
        session = _session(str(sid), result[1], int(result[0])) if result else None
        if session is not None and self.kept is not None:
            await rows.proven(self.kept, session.user_id, sid, session.amr, now)
        return session

    async def forget_second_factor(self, tx: rows.Tx, user_id: UUID, keep: UUID) -> None:
        """The factor turned off: every other session of the user ends, `keep` stays
        without its `mfa_at` (its next tokens carry none), in Redis and in `tx`."""
        await self.revoke_user(tx, user_id, keep=keep)
        with redis_call():
            await self._forget(args=[str(keep)])
        if self.kept is not None:
            await rows.forgotten(tx, user_id)

    async def move_to_org(self, sid: UUID, org_id: UUID) -> Session | None:
        """Points a live session at another org (no cookie to rotate at hand); None when
        the session is gone, which stays gone."""
        for ready_key in (self.ready_key, ""):
            with redis_call():
                result = await self._move(args=[str(sid), str(org_id), repr(time.time()),
                                                ready_key])
            if not _unready(result):
                break
            await self._ready()
        session = _session(str(sid), result[1], int(result[0])) if result else None
        if session is not None and self.kept is not None:
            await rows.moved(self.kept, session.user_id, sid, org_id)
        return session

    async def list_for_user(self, user_id: UUID) -> list[Session]:
        with redis_call():
            sids = [_text(s) for s in await self.redis.smembers(f"usess:{user_id}")]
            async with self.redis.pipeline(transaction=False) as pipe:
                for sid in sids:
                    pipe.hgetall(f"sess:{sid}")
                rows = await pipe.execute()
        sessions = [_session(sid, row) for sid, row in zip(sids, rows, strict=True) if row]
        return sorted((s for s in sessions if s is not None), key=lambda s: -s.created_at)

    async def end(self, sid: UUID | None = None, *, token: str | None = None,
                  owner: UUID | None = None) -> Ended | None:
        """Revokes the family `sid` (or, without it, the one `token` belongs to), only
        if it is `owner`'s when given; None when there was no such live session."""
        digest = successor = ""
        if token is not None:
            digest = token_hash(token)
            successor = token_hash(successor_of(self._successor_key, token))
        for ready_key in (self.ready_key, ""):
            with redis_call():
                result = await self._end(args=[
                    str(sid) if sid else "", digest, successor, repr(time.time()), self.grace,
                    str(owner) if owner else "", ready_key])
            if not _unready(result):
                break
            await self._ready()
        if not result:
            return None
        org = _text(result[2])
        ended = Ended(UUID(_text(result[0])), UUID(_text(result[1])),
                      UUID(org) if org else None, bool(result[3]))
        if self.kept is not None:
            await rows.revoked(self.kept, ended.user_id, [ended.session_id])
        return ended

    async def revoke(self, sid: UUID) -> UUID | None:
        """Deletes the family; returns its user id (None if it was already gone)."""
        ended = await self.end(sid)
        return ended.user_id if ended else None

    async def revoke_user(self, tx: rows.Tx, user_id: UUID,
                          keep: UUID | None = None) -> list[UUID]:
        """Ends every session of the user but `keep`: in Redis at once, in PostgreSQL in
        `tx`, the caller's transaction (a user's or the platform's), with the change that
        ends them."""
        with redis_call():
            sids = await self._revoke_user(args=[str(user_id), str(keep) if keep else ""])
        if self.kept is not None:  # every one PostgreSQL knows, whatever Redis still held
            await rows.revoked_for_user(tx, user_id, keep)
        return [UUID(_text(s)) for s in sids]

    async def cut_off(self, tx: rows.Tx, user_id: UUID, *, end_sessions: bool) -> int:
        """Kills the user's access tokens minted so far (and, with `end_sessions`, every
        session, in `tx` as revoke_user), leaving those minted afterwards alive; returns
        the cut (µs, Redis's clock) for PostgreSQL to keep (users.set_tokens_valid_after)."""
        with redis_call():
            cut = int(await self._cut(args=[str(user_id), "1" if end_sessions else "0"]))
        if self.kept is not None and end_sessions:
            await rows.revoked_for_user(tx, user_id, None)
        return cut

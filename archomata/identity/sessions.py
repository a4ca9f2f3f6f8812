"""Sessions: refresh-token families kept in Redis, rotated atomically by one Lua script.

A session holds its user, current org, times, IP, user agent and absolute expiry, plus the
SHA-256 of its current refresh token and of that token's parent. Redis never sees a
token, only hashes:

    sess:{sid}     hash   user_id, org_id, created_at, last_used_at, ip, user_agent,
                          expires_at, current, parent, rotated_at, amr, mfa_at,
                          next (the successor of `parent`, sealed, see below)
    rt:{sha256}    string the sid of the family the token belongs (or belonged) to
    sessrt:{sid}   set    every token hash of the family, to delete them with it
    usess:{uid}    set    the user's session ids
    sessgone:{sid} string the family ended lately (a rebuild must not put it back)

Rotation draws a random successor and keeps it sealed under a key derived from the
presented token alone (`next`), so tabs that present the same parent inside the grace
window all receive the same successor, on any instance, without Redis or PostgreSQL
holding anything that opens without that token, and without anything derived from the
data key (which rotates, and may differ between the instances of a rolling deploy).
Presenting an older token, or the parent after the window, revokes the whole family, on
whichever route presents it.

Every write to a session runs in the script that checks the session is still live, so a
revocation is never undone by a write racing it.

PostgreSQL keeps every family too (archomata.identity.store.session_rows: hashes only), so
that when Redis loses its data the rebuild puts the live families back (`restore`) before
any token is accepted: no one is signed out, and every revocation holds. An acknowledged
revocation is in PostgreSQL before the answer (contract §2): a family is found by a
script that changes nothing, ended in PostgreSQL (with its audit entry), then in Redis;
a rotation's new cookie is handed out only once PostgreSQL holds it. Either write
failing is a 503, and the retry writes it. A script that finds or changes a family by its
token first asks whether Redis has been rebuilt, and the store rebuilds it before
answering: a refresh or a logout never meets an empty Redis. A server that came back
with older data (a replica promoted behind its master, an old snapshot) is rebuilt too
(server_watch.py): the families PostgreSQL has ended are ended there, and those it holds
rotated later are written over.

The scripts (archomata.identity.session_scripts) that hand out a session also return the
issue instant of the access tokens minted from it, on the clock the user's token cut-off
is taken on (rv:user:{uid} `cut`, see revocation.py); session_replies.py reads their
answers, refresh_tokens.py hashes tokens and seals successors.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import TypeVar
from uuid import UUID

from redis.asyncio import Redis

from archomata.config import Config
from archomata.errors import ServiceUnavailable
from archomata.identity import session_scripts
from archomata.identity.refresh_tokens import (
    TOKEN_BYTES,
    open_successor,
    seal_successor,
    token_hash,
)
from archomata.identity.session_replies import (
    FAMILY_LIMIT,
    Ended,
    Outcome,
    Record,
    Rotation,
    fields_of,
    refuse_family,
    session_of,
    text,
    unready,
)
from archomata.identity.store import session_rows
from archomata.identity.store.session_rows import Session
from archomata.redis_boundary import redis_call

log = logging.getLogger(__name__)
T = TypeVar("T")

class SessionStore:
    def __init__(self, redis: Redis, config: Config,
                 door: session_rows.UserDoor | None = None) -> None:
        self.redis = redis
        # Where families are kept as well: a user's transaction. None: Redis alone (tests).
        self.kept = door
        # Set by the app: the rebuilt marker's key, and what rebuilds Redis.
        self.ready_key = ""
        self.rebuild: Callable[[], Awaitable[None]] | None = None
        # Set by the app: told of each family a replayed refresh token ended (a metric).
        self.on_reuse: Callable[[], object] = lambda: None
        self.ttl = config.refresh_token_ttl_seconds
        self.grace = config.refresh_reuse_grace_seconds
        # A revocation's PostgreSQL write gives up well before the request's deadline: its
        # answer is then a 503 the client retries, never a 504.
        self.write_seconds = max(0.5, min(5.0, config.request_timeout_seconds / 3))
        self._create = redis.register_script(session_scripts.CREATE)
        self._rotate = redis.register_script(session_scripts.ROTATE)
        self._move = redis.register_script(session_scripts.MOVE)
        self._prove = redis.register_script(session_scripts.PROVE)
        self._forget = redis.register_script(session_scripts.FORGET)
        self._find = redis.register_script(session_scripts.FIND)
        self._end = redis.register_script(session_scripts.END)
        self._revoke_user = redis.register_script(session_scripts.REVOKE_USER)
        self._cut = redis.register_script(session_scripts.CUT)

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
                await session_rows.insert(self.kept, sid, user_id, org_id, now, ip,
                                          user_agent[:256], now + self.ttl,
                                          token_hash(token), amr, mfa_at)
            except BaseException:
                await self._drop(sid)  # PostgreSQL has no live row of it: Redis alone
                raise
        return Session(sid, user_id, org_id, now, now, ip, user_agent[:256], now + self.ttl,
                       int(issued), amr, mfa_at), token

    async def rotate(self, token: str, ip: str, user_agent: str,
                     new_org: UUID | None = None, only: UUID | None = None, *,
                     limited: bool = False, on_reuse: Record | None = None) -> Rotation:
        """Rotates the family of `token` (moving it to `new_org`); with `only`, a token of
        another family is left alone (FOREIGN), unless it is a replay: a reuse ends its
        family wherever it is presented, in PostgreSQL (with `on_reuse`, its audit entry)
        and then in Redis. With `limited`, the family's own limit (FAMILY_LIMIT) applies:
        RateLimited past it. The new cookie is handed out only once PostgreSQL holds the
        rotation (ServiceUnavailable otherwise): a retry with the parent inside the grace
        window writes it again and gets the same successor."""
        successor = secrets.token_urlsafe(TOKEN_BYTES)
        sealed = seal_successor(token, successor)
        now = time.time()
        limit = [FAMILY_LIMIT.limit, FAMILY_LIMIT.window_seconds * 1000] if limited else ["", ""]
        for ready_key in (self.ready_key, ""):  # once more, without asking, once rebuilt
            with redis_call():
                result = await self._rotate(args=[
                    token_hash(token), token_hash(successor), repr(now), self.grace,
                    str(new_org) if new_org else "", ip, user_agent[:256],
                    str(only) if only else "", ready_key, sealed, *limit])
            if text(result[0]) != "unready":
                break
            await self._ready()
        outcome = Outcome(text(result[0]))
        if outcome is Outcome.LIMITED:
            refuse_family(result[2])
        if outcome is Outcome.REUSE:
            user, org = text(result[2]), text(result[3])
            sid = UUID(text(result[1]))
            if user:
                await self._end_found(Ended(sid, UUID(user), UUID(org) if org else None, True),
                                      on_reuse)
            return Rotation(outcome, revoked_session_id=sid,
                            revoked_user_id=UUID(user) if user else None,
                            revoked_org_id=UUID(org) if org else None)
        if outcome not in (Outcome.ROTATED, Outcome.SAME):
            return Rotation(outcome)
        fields = fields_of(result[3])
        session = session_of(text(result[1]), fields, int(result[2]))
        if session is None:
            return Rotation(Outcome.REVOKED)
        if outcome is Outcome.SAME:
            # The parent again: the successor it was rotated to, opened with it.
            same = open_successor(token, fields.get("next", ""))
            if same is None or token_hash(same) != fields["current"]:
                return Rotation(Outcome.UNKNOWN)  # rotated before successors were sealed
            successor = same
        if self.kept is not None:
            # Written again for SAME: the first answer may have been a 503 from here.
            kept = await self._durably(session_rows.rotated(
                self.kept, session.user_id, session.id, fields["current"], fields["parent"],
                fields["next"], float(fields["rotated_at"]), fields.get("ip", ""),
                fields.get("user_agent", ""), new_org))
            if not kept:  # ended in PostgreSQL (a revocation whose Redis step is to come)
                await self._drop(session.id)
                return Rotation(Outcome.REVOKED)
        return Rotation(outcome, session, successor)

    async def prove_second_factor(self, sid: UUID, factor: str) -> Session | None:
        """Records a second factor proven now on a live session (step-up): its tokens and
        refreshes carry the new `mfa_at`. None when the session is gone."""
        now = time.time()
        with redis_call():
            result = await self._prove(args=[str(sid), factor, repr(now), repr(now)])
        session = session_of(str(sid), result[1], int(result[0])) if result else None
        if session is not None and self.kept is not None:
            await session_rows.proven(self.kept, session.user_id, sid, session.amr, now)
        return session

    async def forget_second_factor(self, tx: session_rows.Tx, user_id: UUID,
                                   keep: UUID) -> None:
        """The factor turned off: every other session of the user ends, `keep` stays
        without its `mfa_at` (its next tokens carry none), in Redis and in `tx`."""
        await self.revoke_user(tx, user_id, keep=keep)
        with redis_call():
            await self._forget(args=[str(keep)])
        if self.kept is not None:
            await session_rows.forgotten(tx, user_id)

    async def move_to_org(self, sid: UUID, org_id: UUID, *,
                          limited: bool = False) -> Session | None:
        """Points a live session at another org (no cookie to rotate at hand); None when
        the session is gone, which stays gone. With `limited`, as `rotate`."""
        limit = [FAMILY_LIMIT.limit, FAMILY_LIMIT.window_seconds * 1000] if limited else ["", ""]
        for ready_key in (self.ready_key, ""):
            with redis_call():
                result = await self._move(args=[str(sid), str(org_id), repr(time.time()),
                                                ready_key, *limit])
            if not unready(result):
                break
            await self._ready()
        if result and text(result[0]) == Outcome.LIMITED:
            refuse_family(result[1])
        session = session_of(str(sid), result[1], int(result[0])) if result else None
        if session is not None and self.kept is not None:
            await session_rows.moved(self.kept, session.user_id, sid, org_id)
        return session

    async def list_for_user(self, user_id: UUID) -> list[Session]:
        with redis_call():
            sids = [text(s) for s in await self.redis.smembers(f"usess:{user_id}")]
            async with self.redis.pipeline(transaction=False) as pipe:
                for sid in sids:
                    pipe.hgetall(f"sess:{sid}")
                rows = await pipe.execute()
        sessions = [session_of(sid, row) for sid, row in zip(sids, rows, strict=True) if row]
        return sorted((s for s in sessions if s is not None), key=lambda s: -s.created_at)

    async def end(self, sid: UUID | None = None, *, token: str | None = None,
                  owner: UUID | None = None, record: Record | None = None,
                  known: bool = False) -> Ended | None:
        """Revokes the family `sid` (or, without it, the one `token` belongs to), only
        if it is `owner`'s when given: in PostgreSQL first (with `record`, its audit entry,
        in that transaction), then in Redis, so that no answer says it ended before it is
        durable; ServiceUnavailable when PostgreSQL cannot be written. None when there was
        no such live session.

        `known`: `sid` and `owner` belong together by an access token this service signed,
        or by the server's own records. Then
        PostgreSQL is written even when Redis holds no live family and no trace of ending
        it (a family Redis lost, or ended before PostgreSQL heard, as ends were made once):
        PostgreSQL alone may still hold it live. Never for a family ended lately, which
        PostgreSQL holds ended already: a replayed token costs no write."""
        found = await self._found(sid, token, owner)
        if isinstance(found, Ended):
            return await self._end_found(found, record)
        if found == "gone" or not known or sid is None or owner is None or self.kept is None:
            return None
        # Ended in Redis only if PostgreSQL says the row is the owner's.
        mine = Ended(sid, owner, None, False)
        if not await self._durably(self._write_end(mine, record)):
            return None
        await self._drop(sid)
        return mine

    async def _found(self, sid: UUID | None, token: str | None,
                     owner: UUID | None) -> Ended | str | None:
        """The live family to end, judged and found by one script that changes nothing;
        'gone' for one ended lately."""
        digest = token_hash(token) if token is not None else ""
        for ready_key in (self.ready_key, ""):
            with redis_call():
                result = await self._find(args=[
                    str(sid) if sid else "", digest, repr(time.time()), self.grace,
                    str(owner) if owner else "", ready_key])
            if not unready(result):
                break
            await self._ready()
        if not result:
            return None
        if isinstance(result, bytes | str):
            return text(result)
        org = text(result[2])
        return Ended(UUID(text(result[0])), UUID(text(result[1])),
                     UUID(org) if org else None, bool(result[3]))

    async def _end_found(self, found: Ended, record: Record | None) -> Ended | None:
        """Ends a family Redis holds as live: PostgreSQL first, then Redis. None when
        another request ended it meanwhile (it wrote the record)."""
        ended = True
        if self.kept is not None:
            ended = await self._durably(self._write_end(found, record))
        live = await self._drop(found.session_id)
        if not (ended or live):
            return None
        if found.stale_token:  # a replay: counted once, by the request that ended it
            self.on_reuse()
        return found

    async def _write_end(self, found: Ended, record: Record | None) -> bool:
        assert self.kept is not None
        async with self.kept(found.user_id, found.org_id) as tx:
            ended = await session_rows.ended_one(tx, found.user_id, found.session_id)
            if ended and record is not None:
                await record(tx, found)
        return ended

    async def _drop(self, sid: UUID) -> bool:
        """Ends the family in Redis (PostgreSQL has it ended, or never had it); whether it
        was live there."""
        with redis_call():
            return bool(await self._end(args=[str(sid)]))

    async def _durably(self, write: Awaitable[T]) -> T:
        """A session change PostgreSQL must hold before the answer: bounded in time, and a
        failure of any kind is a 503 the client retries (never a 2xx, 500 or 504)."""
        try:
            async with asyncio.timeout(self.write_seconds):
                return await write
        except Exception as exc:
            log.warning("a session change could not be written to PostgreSQL",
                        extra={"error": type(exc).__name__})
            raise ServiceUnavailable(
                "The session change could not be recorded; retry.") from exc

    async def revoke(self, sid: UUID, user_id: UUID) -> bool:
        """Ends the user's family `sid` (both from the server's records), as `end` does;
        whether it was live."""
        return await self.end(sid, owner=user_id, known=True) is not None

    async def revoke_user(self, tx: session_rows.Tx, user_id: UUID,
                          keep: UUID | None = None) -> list[UUID]:
        """Ends every session of the user but `keep`: in PostgreSQL in `tx`, the caller's
        transaction (a user's or the platform's), with the change that ends them, then in
        Redis at once. The statement failing is a 503, with nothing ended in Redis."""
        await self._ended_for_user(tx, user_id, keep)
        with redis_call():
            sids = await self._revoke_user(args=[str(user_id), str(keep) if keep else ""])
        return [UUID(text(s)) for s in sids]

    async def cut_off(self, tx: session_rows.Tx, user_id: UUID, *, end_sessions: bool) -> int:
        """Kills the user's access tokens minted so far (and, with `end_sessions`, every
        session, in `tx` as revoke_user), leaving those minted afterwards alive; returns
        the cut (µs, Redis's clock) for PostgreSQL to keep (users.set_tokens_valid_after)."""
        if end_sessions:
            await self._ended_for_user(tx, user_id, None)
        with redis_call():
            cut = int(await self._cut(args=[str(user_id), "1" if end_sessions else "0"]))
        return cut

    async def _ended_for_user(self, tx: session_rows.Tx, user_id: UUID,
                              keep: UUID | None) -> None:
        if self.kept is None:
            return
        session_rows.reaches(tx, user_id)  # a wrong scope is a bug to see, not a 503
        # Every one PostgreSQL knows, whatever Redis holds.
        await self._durably(session_rows.revoked_for_user(tx, user_id, keep))

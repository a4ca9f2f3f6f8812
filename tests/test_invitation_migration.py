"""sql/008 on a database that already holds invitations: those whose inviter is no longer
an administrator die, of two open ones for an address the newer stands, each audited."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import asyncpg

from archomata.audit.chain import verify
from archomata.audit.keyed import current_key
from archomata.ops.devservers import PostgresServer
from archomata.ops.migrations import migrate, sql_dir
from tests.conftest import make_database

SEED = """
    select set_config('app.platform', 'on', false);
    insert into orgs (id, name) values ('00000000-0000-0000-0000-0000000000a1', 'Org');
    insert into users (id, email, email_normalized, name, disabled_at) values
        ('00000000-0000-0000-0000-0000000000b1', 'admin@x.test', 'admin@x.test', 'A', null),
        ('00000000-0000-0000-0000-0000000000b2', 'demoted@x.test', 'demoted@x.test', 'D', null),
        ('00000000-0000-0000-0000-0000000000b3', 'removed@x.test', 'removed@x.test', 'R', null),
        ('00000000-0000-0000-0000-0000000000b4', 'off@x.test', 'off@x.test', 'O', now());
    insert into memberships (org_id, user_id, org_role) values
        ('00000000-0000-0000-0000-0000000000a1', '00000000-0000-0000-0000-0000000000b1',
         'administrator'),
        ('00000000-0000-0000-0000-0000000000a1', '00000000-0000-0000-0000-0000000000b2',
         'member'),
        ('00000000-0000-0000-0000-0000000000a1', '00000000-0000-0000-0000-0000000000b4',
         'administrator');
    insert into invitations (id, org_id, email, email_normalized, org_role, token_hash,
                             invited_by, expires_at, created_at, accepted_at)
    select ('00000000-0000-0000-0000-0000000000c' || n)::uuid,
           '00000000-0000-0000-0000-0000000000a1', e, e, 'administrator',
           sha256(n::text::bytea), ('00000000-0000-0000-0000-0000000000b' || by)::uuid,
           now() + interval '1 day', now() - make_interval(mins => 10 - n), accepted
    from (values (1, 'kept@x.test', 1, null::timestamptz),
                 (2, 'by-demoted@x.test', 2, null),
                 (3, 'by-removed@x.test', 3, null),
                 (4, 'by-disabled@x.test', 4, null),
                 (5, 'twice@x.test', 1, null),
                 (6, 'twice@x.test', 1, null),
                 (7, 'used@x.test', 3, now())) v(n, e, by, accepted);
"""


async def test_migration_008_ends_invitations_that_outlived_their_authority(
        postgres: PostgresServer, tmp_path: Path) -> None:
    before = tmp_path / "sql"
    before.mkdir()
    for path in sql_dir().glob("*.sql"):
        if int(path.name[:3]) < 8:
            shutil.copy(path, before / path.name)
    urls = await make_database(postgres, "mig_invitations", migrated=False)
    await migrate(urls.owner, urls.runtime, before)
    conn = await asyncpg.connect(urls.owner)
    try:
        await conn.execute(SEED)
        await migrate(urls.owner, urls.runtime)
        await conn.execute("select set_config('app.platform', 'on', false)")
        ended = {r["n"]: r["revoked_reason"] for r in await conn.fetch(
            "select right(id::text, 1)::int as n, revoked_reason from invitations")}
        assert ended == {1: None, 2: "inviter_not_administrator",
                         3: "inviter_not_administrator", 4: "inviter_not_administrator",
                         5: "superseded", 6: None, 7: None}
        entries = await conn.fetch("select actor_type, resource_id, details from audit_log "
                                   "where action = 'member.invitation_revoked'")
        assert sorted((e["resource_id"][-1], json.loads(e["details"])["reason"])
                      for e in entries) == [
            ("2", "inviter_not_administrator"), ("3", "inviter_not_administrator"),
            ("4", "inviter_not_administrator"), ("5", "superseded")]
        assert {e["actor_type"] for e in entries} == {"system"}
        assert (await verify(conn, current_key())).breaks == []
    finally:
        await conn.close()

-- The columns only the platform administration changes: users.platform_role,
-- users.disabled_at and orgs.disabled_at. The runtime role may no longer write them
-- (column-level grants: it keeps UPDATE and INSERT on every other column), so a future
-- SQL injection in an org route cannot make itself a platform administrator, lift its
-- org's suspension or re-enable its own user. They change only through the two
-- functions below, which run as the owner and refuse unless the change's audit entry was
-- written in the same transaction: the admin routes and `create-admin` record the entry
-- first, then call them. A column added to users or orgs after this migration needs a
-- grant of its own to the runtime group role.

do $$
declare
    t record;
    cols text;
begin
    for t in select * from (values ('users', array['platform_role', 'disabled_at']),
                                   ('orgs', array['disabled_at'])) as p (tab, protected) loop
        select string_agg(quote_ident(column_name), ', ' order by ordinal_position)
          into cols
          from information_schema.columns
         where table_schema = current_schema() and table_name = t.tab
           and column_name <> all (t.protected);
        execute format('revoke insert, update on %I from archomata_runtime', t.tab);
        execute format('grant insert (%s), update (%s) on %I to archomata_runtime',
                       cols, cols, t.tab);
    end loop;
end
$$;

-- Whether this transaction wrote an audit entry of one of `p_actions` on the resource.
-- Entries are stamped with clock_timestamp(), never before the transaction's now(), so
-- the time index bounds the search to the entries written since it began. The read sees
-- every org for its one query (the owner is under the forced row-level security too);
-- the scope is put back before it returns, as agent_key_record does (sql/009).
create function audited_in_this_transaction(p_type text, p_id text, p_actions text[])
    returns boolean
    language plpgsql
    set search_path = pg_catalog, public, pg_temp
    as $$
declare
    prior constant text := coalesce(current_setting('app.platform', true), '');
    found boolean;
begin
    perform set_config('app.platform', 'on', true);
    select exists (
        select 1 from audit_log a
        where a.occurred_at >= now() and a.xmin = pg_current_xact_id()::xid
          and a.resource_type = p_type and a.resource_id = p_id
          and a.action = any (p_actions)) into found;
    perform set_config('app.platform', prior, true);
    return found;
end
$$;
revoke all on function audited_in_this_transaction(text, text, text[]) from public;

-- A user's platform role and disabled mark (null: left as it is), once the change's
-- `user.updated` (or, by create-admin, `user.created`) entry is written.
create function admin_update_user(p_user uuid, p_platform_role text, p_disabled boolean)
    returns setof users
    language plpgsql
    security definer
    set search_path = pg_catalog, public, pg_temp
    as $$
begin
    if not audited_in_this_transaction('user', p_user::text,
                                       array['user.updated', 'user.created']) then
        raise exception 'a platform role or disabled mark changes only with its audit entry'
            using errcode = 'insufficient_privilege';
    end if;
    return query
        update users
           set platform_role = coalesce(p_platform_role, platform_role),
               disabled_at = case when p_disabled is null then disabled_at
                                  when p_disabled then coalesce(disabled_at, now()) end,
               updated_at = now()
         where id = p_user
        returning *;
end
$$;
revoke all on function admin_update_user(uuid, text, boolean) from public;
grant execute on function admin_update_user(uuid, text, boolean) to archomata_runtime;

-- An org disabled or enabled, once its `org.disabled` / `org.enabled` entry is written.
create function admin_set_org_disabled(p_org uuid, p_disabled boolean)
    returns setof orgs
    language plpgsql
    security definer
    set search_path = pg_catalog, public, pg_temp
    as $$
begin
    if not audited_in_this_transaction(
            'org', p_org::text,
            array[case when p_disabled then 'org.disabled' else 'org.enabled' end]) then
        raise exception 'an org is disabled or enabled only with its audit entry'
            using errcode = 'insufficient_privilege';
    end if;
    return query
        update orgs
           set disabled_at = case when p_disabled then coalesce(disabled_at, now()) end,
               updated_at = now()
         where id = p_org
        returning *;
end
$$;
revoke all on function admin_set_org_disabled(uuid, boolean) from public;
grant execute on function admin_set_org_disabled(uuid, boolean) to archomata_runtime;

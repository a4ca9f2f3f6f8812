-- An agent's key is looked up before anyone knows its org (the key names it). This reads
-- the one row a key id names, in every org, and nothing else: the lookup needs no
-- transaction that sees every org (archomata.bridge.api_keys). The scope it widens for
-- its one query is put back before it returns (a function-level SET of a custom setting
-- needs a superuser); an error aborts the whole transaction, scope and all.
create function agent_key_record(p_key_id text)
    returns table (id uuid, org_id uuid, key_hash text, org_disabled boolean)
    language plpgsql
    set search_path = pg_catalog, public, pg_temp
    as $$
declare
    prior constant text := coalesce(current_setting('app.platform', true), '');
begin
    perform set_config('app.platform', 'on', true);
    return query
        select a.id, a.org_id, a.key_hash, o.disabled_at is not null
        from agents a join orgs o on o.id = a.org_id
        where a.key_id = p_key_id;
    perform set_config('app.platform', prior, true);
end
$$;
revoke all on function agent_key_record(text) from public;
grant execute on function agent_key_record(text) to archomata_runtime;

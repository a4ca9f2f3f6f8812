-- Lists whose cost stays flat as an org's data grows (issue 25, point 10): each list
-- and filter walks an index in its own order and stops at a page (bench/scale.py).
-- Built inside the migration's transaction, so writes to each table wait for its build.

-- GET /org/members: the org's members in the order they joined.
create index memberships_org_joined_idx on memberships (org_id, created_at, user_id);

-- GET /audit-logs?actor_id=: one actor's entries in the org, newest first, however
-- long that actor's history elsewhere (audit_log_actor_idx serves the platform's filter).
create index audit_log_org_actor_idx on audit_log (org_id, actor_id, occurred_at desc, id desc)
    where actor_id is not null;

-- The platform administrator's q: a word's entries across every chain, newest first
-- (audit_log_terms_idx holds them chain by chain).
create index audit_log_terms_time_idx on audit_log_terms (term, occurred_at desc, entry_id desc);

-- GET /orders?status= (with or without account_id), newest first. The account's leads
-- with org_id too, so that it matches every equality the query states and the planner
-- never prefers walking the org's orders of that status for one account's.
create index orders_org_status_idx on orders (org_id, status, created_at desc, id desc);
create index orders_account_status_idx
    on orders (org_id, account_id, status, created_at desc, id desc);

-- GET /accounts/{id}/deals?symbol=, newest first.
create index deals_symbol_idx on deals (account_id, symbol, executed_at desc, id desc);

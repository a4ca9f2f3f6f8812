-- What an order is checked against (archomata.risk, `Exposure.held`): the last state push,
-- plus the account's orders in flight and those filled since that push. `reflected` marks
-- a filled order a later push has accounted for (the push sets it, archomata.store.market),
-- so what is still unsettled is a small partial index, read under the account's lock on
-- every order placed and every close, whatever the length of the account's history.
alter table orders add column reflected boolean not null default false;
comment on column orders.reflected is
    'A state push that arrived after this order filled has accounted for it';
update orders o set reflected = true
from accounts a
where a.org_id = o.org_id and a.id = o.account_id and o.status = 'filled'
  and a.state_updated_at > o.executed_at;
create index orders_unsettled_idx on orders (account_id, position_ticket)
    where status in ('pending', 'sent') or (status = 'filled' and not reflected);

-- What an order is checked against (archomata.risk, `Exposure.held`) is counted from the
-- account's orders still in flight and those filled since its last state push: each order
-- placement reads both under the account's lock, so they are served from small partial
-- indexes instead of the account's whole order history.
create index orders_in_flight_idx on orders (account_id, position_ticket)
    where status in ('pending', 'sent');
create index orders_filled_idx on orders (account_id, executed_at)
    where status = 'filled';

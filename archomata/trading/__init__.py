"""Trading: broker accounts, orders, strategies, positions and deals, risk, credentials.

    routes/      accounts.py, orders.py, strategies.py: the SPA's trading routes
    store/       accounts.py, orders.py, market.py (positions, deals), strategies.py: SQL
    schemas.py   the routes' request and response schemas
    values.py    the value parsers (decimals, symbols, tickets, times) the bridge reads too
    risk.py      the risk limits an order is checked against
    custody.py   who may put broker credentials within an agent key's reach (and the
                 agent row's lock that rule rests on)
    credentials.py  broker credentials encrypted at rest, re-encrypted on key rotation
"""

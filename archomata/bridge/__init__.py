"""The MT5 bridge: agents, their API keys, the commands they fetch, what they push.

    routes.py         /bridge: what agents call with their `X-API-Key`
    agents_routes.py  /agents: people managing agents and their keys
    agents.py         the agents' SQL: keys (bcrypt-hashed) and heartbeats
    api_keys.py       parsing, verifying and caching agent keys
    broadcast.py      messages between instances (wake a long poll, drop a revoked key)
    schemas.py        the bodies of the /bridge routes
"""

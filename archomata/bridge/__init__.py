"""The MT5 bridge: agents, their API keys, the commands they fetch, what they push.

    routes.py         /bridge: what agents call with their `X-API-Key`
    agents_routes.py  /agents: people managing agents and their keys
    service.py        what an agent does, without HTTP: heartbeat, credentials, pushes, poll
    agents.py         the agents' SQL: keys (bcrypt-hashed) and heartbeats
    commands.py       the queue of commands the agents lease (an order puts its command in)
    polls.py          an agent's waiting long polls, counted across instances in Redis
    api_keys.py       parsing, verifying and caching agent keys
    broadcast.py      messages between instances (wake a long poll, drop a revoked key)
    schemas.py        the bodies of the /bridge routes
"""

"""The Redis gate: what every credentialed request passes, in one Lua call.

- check.py: the call itself (`GATE`, `call_gate`): the request's rate-limit hit, its
  token's revocation (`judge`) and the caller's cached permissions together; the key
  names the revocation state lives under (`READY`, `STALE`), the client's bucket.
- ratelimit.py: the sliding windows (`RateLimiter`), the script start other scripts
  count a hit with (`OPTIONAL_HIT`), the in-memory stand-in while Redis is out.
- authz.py: the permission cache's entry (`Authz`) and its source in PostgreSQL.

It stands below identity and bridge, whose authenticators run it, and below access,
which reads what it caches; it imports none of them. What writes the revocation state
and rebuilds it from PostgreSQL is identity's (archomata.identity.revocation); the
route's rate class comes from the pipeline (`keys.RATE_TARGET`, set by authn).
"""

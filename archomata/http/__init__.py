"""The request pipeline, assembled above the domains: the middlewares (one concern per
module, `archomata.app` lists them outermost first), the server and CORS. It stands on
access (each route's policy) and finds its authenticators through the Protocol in
middlewares/authn.py, which `archomata.app` fills in."""

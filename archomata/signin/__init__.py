"""Signing in: the one door every way in (password, SSO, invitation) opens sessions
through, and the password proof in front of it (service.py). No HTTP here: the routes
turn a refusal into their answer (archomata.identity.problem, handlers/sso.py)."""

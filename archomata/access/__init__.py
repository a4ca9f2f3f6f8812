"""What a caller may do: permissions and roles (roles.py), the principal a request carries
and the one way to read it (caller.py), and the guards that declare each route's policy
beside its permission (guards.py, route_policy.py). The permission cache it reads is the
gate's (archomata.gate.authz)."""

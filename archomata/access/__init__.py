"""What a caller may do: permissions and roles, the principal a request carries, and the
guards that declare each route's policy beside its permission (guards.py,
route_policy.py). The permission cache it reads is the gate's (archomata.gate.authz)."""

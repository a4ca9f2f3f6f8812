"""What a caller may do: permissions and roles, the principal a request carries, the
permission cache (authz.py), and the guards that declare each route's policy beside
its permission (guards.py, route_policy.py)."""

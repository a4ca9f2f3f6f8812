"""Servers only the tests start: a PgBouncer in front of the test PostgreSQL
(`pgbouncer.py`) and a Redis master, replica and Sentinel for the failover tests
(`sentinel.py`). `archomata dev` never needs them, so they live here, beside the
harness, on the package's own local servers (archomata/ops/devservers.py)."""

"""`archomata migrate`: pending sql/NNN_*.sql files applied as the schema owner
(archomata/ops/migrations.py does the work)."""

from __future__ import annotations

import asyncio
import os

from archomata.ops.database_urls import database_urls


def migrate() -> None:
    from archomata.ops import migrations

    owner, runtime = database_urls(os.environ)
    applied = asyncio.run(migrations.migrate(owner, runtime))
    print(f"migrations applied: {len(applied)}" +
          (f" ({', '.join(f'{m.version:03d}_{m.name}' for m in applied)})" if applied else ""))

"""`archomata rotate-data-key`: every secret sealed with the data key re-sealed under
ARCHOMATA_DATA_KEY, in one transaction; afterwards the new key alone opens them all."""

from __future__ import annotations

import asyncio
import sys
from typing import TYPE_CHECKING

from archomata.config import ConfigError, load_config

if TYPE_CHECKING:
    from archomata.sealed import Rotation, SealedKind


def sealed_kinds() -> tuple[SealedKind, ...]:
    """Every kind of secret sealed with the data key: a new one (passkeys) is one more
    entry here, and its `SealedKind` beside its store."""
    from archomata.identity.mfa.sealing import TOTP
    from archomata.trading import credentials

    return (credentials.SEALED, TOTP)


def rotate_data_key() -> int:
    """Re-seals every stored secret under ARCHOMATA_DATA_KEY; the key(s) they were sealed
    with must be in ARCHOMATA_DATA_KEY_PREVIOUS. Exit 1 when some secret did not open."""
    from archomata.crypto import DataKeys, UnknownKeyError
    from archomata.db import create_pool
    from archomata.sealed import rotate_all

    config = load_config()
    data_keys = DataKeys(config.data_key.reveal(),
                         [k.reveal() for k in config.data_key_previous])

    async def run() -> list[Rotation]:
        pool = await create_pool(config.database_url.reveal(), min_size=1, max_size=1)
        try:
            return await rotate_all(pool, data_keys, sealed_kinds())
        finally:
            await pool.close()

    try:
        done = asyncio.run(run())
    except UnknownKeyError as exc:
        raise ConfigError(f"a stored secret opens under no configured key ({exc}): put "
                          "that key in ARCHOMATA_DATA_KEY_PREVIOUS; nothing was changed") from None
    print(f"data key {data_keys.current_id}: "
          + "; ".join(f"{r.kind} {r.resealed} of {r.stored} re-sealed" for r in done))
    unreadable = [(r.kind, row) for r in done for row in r.unreadable]
    if unreadable:
        print(f"archomata: {len(unreadable)} stored secrets do not open under their key "
              "(tampered with, or copied from another row) and were left as they are: "
              + ", ".join(f"{kind} {row}" for kind, row in unreadable), file=sys.stderr)
        return 1
    return 0

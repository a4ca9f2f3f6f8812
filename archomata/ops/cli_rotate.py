"""`archomata rotate-data-key`: stored secrets re-encrypted under ARCHOMATA_DATA_KEY."""

from __future__ import annotations

import asyncio
import sys

from archomata.config import ConfigError, load_config


def rotate_data_key() -> int:
    """Re-encrypts stored secrets under ARCHOMATA_DATA_KEY; the key(s) they were sealed
    with must be in ARCHOMATA_DATA_KEY_PREVIOUS. Exit 1 when some secret did not open."""
    from archomata.crypto import DataKeys, UnknownKeyError
    from archomata.db import create_pool
    from archomata.trading.credentials import Rotation, rotate_all

    config = load_config()
    data_keys = DataKeys(config.data_key.reveal(),
                         [k.reveal() for k in config.data_key_previous])

    async def run() -> Rotation:
        pool = await create_pool(config.database_url.reveal(), min_size=1, max_size=1)
        try:
            return await rotate_all(pool, data_keys)
        finally:
            await pool.close()

    try:
        done = asyncio.run(run())
    except UnknownKeyError as exc:
        raise ConfigError(f"a stored secret is {exc}: put that key in "
                          "ARCHOMATA_DATA_KEY_PREVIOUS; nothing was changed") from None
    print(f"data key {data_keys.current_id}: {done.resealed} of {done.stored} stored secrets "
          "re-encrypted")
    if done.unreadable:
        print(f"archomata: {len(done.unreadable)} stored secrets do not open under their key "
              "(tampered with, or copied from another account) and were left as they are: "
              f"accounts {', '.join(map(str, done.unreadable))}", file=sys.stderr)
        return 1
    return 0

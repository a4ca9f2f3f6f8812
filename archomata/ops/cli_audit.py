"""`archomata audit verify|anchor`: the audit log's hash chains, walked or anchored as the
schema owner. Only the command's connection to them and its key: walking and anchoring
belong to the audit domain (its `run_verify` and `run_anchor`)."""

from __future__ import annotations

import argparse
import asyncio
import os

from archomata.config import ConfigError
from archomata.ops.database_urls import database_urls


def audit(args: argparse.Namespace) -> int:
    """`audit verify` walks the hash chains (against witness files if given); `audit
    anchor` records checkpoints before an archive (docs/audit-retention.md) or writes
    signed heads for a witness. Both as the schema owner, both with ARCHOMATA_AUDIT_KEY
    (a ConfigError naming it otherwise: exit 2)."""
    from archomata.audit import chain, keyed

    key = keyed.key_from_environment()
    owner, _ = database_urls(os.environ)
    if args.audit_command == "verify":
        return asyncio.run(chain.run_verify(owner, args.org, key, args.witness))
    if args.before is None and args.output is None:
        raise ConfigError("audit anchor needs --before T, --output FILE, or both")
    return asyncio.run(chain.run_anchor(owner, args.before, args.org, key, args.output))

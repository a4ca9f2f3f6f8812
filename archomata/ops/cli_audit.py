"""`archomata audit verify|anchor`: the audit log's hash chains, walked or anchored as the
schema owner. The chain logic is the audit domain's (archomata/audit_chain.py); this is
only the command's connection to it."""

from __future__ import annotations

import argparse
import asyncio
import os

from archomata.ops.database_urls import database_urls


def audit(args: argparse.Namespace) -> int:
    """`audit verify` walks the hash chains; `audit anchor` records checkpoints before an
    archive (docs/audit-retention.md). Both as the schema owner."""
    from archomata import audit_chain

    owner, _ = database_urls(os.environ)
    if args.audit_command == "verify":
        return asyncio.run(audit_chain.run_verify(owner, args.org))
    return asyncio.run(audit_chain.run_anchor(owner, args.before, args.org))

"""`archomata audit verify|anchor`: the audit log's hash chains, walked or anchored as the
schema owner. Only the command's connection to them: walking and anchoring belong to the
audit domain (its `run_verify` and `run_anchor`)."""

from __future__ import annotations

import argparse
import asyncio
import os

from archomata.ops.database_urls import database_urls


def audit(args: argparse.Namespace) -> int:
    """`audit verify` walks the hash chains; `audit anchor` records checkpoints before an
    archive (docs/audit-retention.md). Both as the schema owner."""
    from archomata.audit import chain as audit_chain

    owner, _ = database_urls(os.environ)
    if args.audit_command == "verify":
        return asyncio.run(audit_chain.run_verify(owner, args.org))
    return asyncio.run(audit_chain.run_anchor(owner, args.before, args.org))

"""Audit: every change's entry, the hash chains over them, and the log's export.

    actions.py         AuditAction: what an entry says happened
    context.py         AuditContext: who acted and from where
    service.py         the flows: record an entry, list the log, export it (no HTTP)
    store.py           the log's SQL, read: listings and the export's pages
    schemas.py         the routes' query strings and answers
    routes.py          /audit-logs: the org's log, its export, the platform's view
    chain.py           the hash chains walked: `archomata audit verify` / `audit anchor`
    chain_walk.py      one chain's entries checked in order, to the first broken link
    keyed.py           ARCHOMATA_AUDIT_KEY and the MACs made with it
    witness.py         signed heads kept outside the database
    search_gate.py     who may run a search (`q`) now
    export_formats.py  entries as CSV or JSON Lines
    export_slots.py    how many exports run at once

Every entry is written by one call, `audit.record(tx, who, action, ...)` (or
`record_each` for many at once), `who` an AuditContext: a handler's is
`audit.context_of(request)`, a flow is handed one.
"""

from __future__ import annotations

from archomata.audit.actions import AuditAction
from archomata.audit.context import AuditContext, context_of
from archomata.audit.service import record, record_each

__all__ = ["AuditAction", "AuditContext", "context_of", "record", "record_each"]

"""Audit: every change's entry, the hash chains over them, and the log's export.

    service.py         record(): one entry inside the caller's transaction
    chain.py           the hash chains walked: `archomata audit verify` / `audit anchor`
    store.py           the log's SQL, read: listings and the export's pages
    routes.py          /audit-logs: the org's log, its export, the platform's view
    export_formats.py  entries as CSV or JSON Lines
    export_slots.py    how many exports run at once

`record`, `AuditAction` and `AuditContext` are re-exported here: most of the code base
writes `from archomata import audit` and `audit.record(...)`.
"""

from archomata.audit.service import (
    AuditAction,
    AuditContext,
    context_of,
    record,
    record_each,
    scrub,
)

__all__ = ["AuditAction", "AuditContext", "context_of", "record", "record_each", "scrub"]

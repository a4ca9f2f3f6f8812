"""Running the service: the implementation of each `archomata` command (the entry point,
archomata/__main__.py, only parses arguments and dispatches), migrations, and the local
servers of `archomata dev`.

    cli_serve.py      `archomata serve`
    cli_migrate.py    `archomata migrate`, on migrations.py (which app start and
                      /health/ready read the schema version from too)
    cli_admin.py      `archomata create-admin`
    cli_audit.py      `archomata audit verify|anchor` (the chains are the audit domain's)
    cli_rotate.py     `archomata rotate-data-key`
    cli_backup.py     `archomata backup|restore`, sealed by backup_stream.py
    workers.py        `archomata serve --workers N`: the processes and their parent
    health.py         /health/live, /health/ready, /metrics and the OpenAPI document
    dev.py            `archomata dev` (`make run`), on devservers.py (PostgreSQL, Redis)
                      and devroot.py (running them as `nobody` under root)
    database_urls.py  the owner and runtime database URLs the commands connect with
"""

"""A trigram index for the runs list's search in the input (PostgreSQL only).

The search is ``UPPER(input::text) LIKE UPPER('%text%')`` (Django's ``icontains``); without an
index a rare text read the whole table (60-70 ms at 100,000 runs, growing with the ledger).
pg_trgm ships with PostgreSQL and is a trusted extension (13 and later): the database's owner
may create it. Where it cannot be created, the index is left out with a warning and the
search still works, by scanning. Built concurrently, so the table keeps taking writes.
"""

import logging

from django.db import DatabaseError, migrations

log = logging.getLogger(__name__)

INDEX = (
    "CREATE INDEX CONCURRENTLY IF NOT EXISTS run_input_trgm ON runs_run "
    "USING gin ((UPPER(input::text)) gin_trgm_ops)"
)


def forward(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    with schema_editor.connection.cursor() as cursor:
        try:
            cursor.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
        except DatabaseError as exc:
            # Said where the person migrating reads it, not only in the log.
            note = f"pg_trgm not available ({exc}): the runs search scans instead of an index"
            print(f"\n  {note}")
            log.warning(note)
            return
        # A build interrupted before left an invalid index that IF NOT EXISTS would keep.
        cursor.execute(
            "SELECT NOT i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
            "WHERE c.relname = 'run_input_trgm'"
        )
        row = cursor.fetchone()
        if row and row[0]:
            cursor.execute("DROP INDEX CONCURRENTLY run_input_trgm")
        cursor.execute(INDEX)


def backward(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        with schema_editor.connection.cursor() as cursor:
            cursor.execute("DROP INDEX CONCURRENTLY IF EXISTS run_input_trgm")


class Migration(migrations.Migration):
    atomic = False
    dependencies = [("runs", "0011_console_indexes")]
    operations = [migrations.RunPython(forward, backward, elidable=False)]

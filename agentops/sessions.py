"""Django's database sessions, with the read that every signed-in request makes written
once as SQL: through the ORM that read cost three times the query's own time (about a
twentieth of a runs list page). Everything else (saving, expiry, ``clearsessions``, the
async read that WebSockets use) is Django's ``db`` backend unchanged."""

from __future__ import annotations

import functools
from typing import Any

from django.contrib.sessions.backends import db
from django.db import connections, router
from django.utils import timezone


class SessionStore(db.SessionStore):
    def _get_session_from_db(self) -> Any:
        alias = router.db_for_read(self.model)
        connection = connections[alias]
        now = connection.ops.adapt_datetimefield_value(timezone.now())
        with connection.cursor() as cursor:
            cursor.execute(_read_sql(alias), [self.session_key, now])
            row = cursor.fetchone()
        if row is None:  # unknown or expired, as the ORM's DoesNotExist
            self._session_key = None
            return None
        return self.model(session_key=self.session_key, session_data=row[0])


@functools.cache
def _read_sql(alias: str) -> str:
    """``Session.objects.get(session_key=…, expire_date__gt=now)``, reading the data only;
    written once per database (as ``runs.hotpath`` writes the step's statements)."""
    from django.contrib.sessions.models import Session

    q = connections[alias].ops.quote_name
    return (
        f"SELECT {q('session_data')} FROM {q(Session._meta.db_table)} "
        f"WHERE {q('session_key')} = %s AND {q('expire_date')} > %s"
    )

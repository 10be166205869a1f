"""Timestamps read from PostgreSQL by psycopg's C loader rather than Django's Python one.

Django registers, on every PostgreSQL connection, a loader for ``timestamptz`` that
subclasses psycopg's pure-Python loader (the C one cannot be subclassed) to put the
connection's time zone on each value. Parsing in Python costs about 2 µs a value, ten times
the C loader's, and a page of the runs list reads six timestamps a row: a tenth of the
page's time went there. Here each connection gets a loader that parses in C and converts
to the same time zone. Django replaces a connection's loader when its ``timezone`` differs
from the connection's; this one carries the connection's, so it stays.
"""

from __future__ import annotations

import functools
from datetime import datetime, tzinfo
from typing import Any

from django.conf import settings


def use_c_timestamps(sender: Any, connection: Any, **kwargs: Any) -> None:
    """``connection_created`` receiver: on PostgreSQL with time zones on, register the
    loader on the new connection (only on it: Django's template of adapters is shared)."""
    if connection.vendor != "postgresql" or not settings.USE_TZ:
        return
    loader = timestamptz_loader(connection.timezone)
    connection.connection.adapters.register_loader("timestamptz", loader)


@functools.cache
def timestamptz_loader(zone: tzinfo) -> type:
    """The loader class for connections in ``zone``."""
    from psycopg import adapters
    from psycopg.adapt import Loader
    from psycopg.postgres import types
    from psycopg.pq import Format

    oid = types["timestamptz"].oid
    parse = adapters.get_loader(oid, Format.TEXT)  # the C loader where psycopg has one

    class CTimestamptzLoader(Loader):
        timezone = zone  # what Django's create_cursor compares with the connection's
        parser = parse  # the class that parses (the tests check it is psycopg's C one)

        def __init__(self, oid: int, context: Any = None) -> None:
            super().__init__(oid, context)
            self._parse = parse(oid, context).load

        def load(self, data: Any) -> datetime:
            value = self._parse(data)
            return value if value.tzinfo is zone else value.astimezone(zone)

    return CTimestamptzLoader

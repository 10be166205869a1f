"""Reads whose SQL is kept once compiled.

Building a query set and compiling it cost the runs list more than its query did on
PostgreSQL: the filters, 22 columns with two joins, the ordering and the cursor came to a
fifth of the page's Python. A ``KeptStatements`` keeps the compiled SQL and parameters of a
read under a key that determines them (who may see what, the filters' values, the cursor),
so a page asked for again runs its statement straight away, through Django's cursor and the
same column converters as the ORM: the rows are always read afresh, only the compiling is
saved.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any

from django.core.exceptions import EmptyResultSet
from django.db import connections
from django.db.models import QuerySet


class KeptStatements:
    """The compiled statements of one read (the same columns in every statement), kept for
    the ``size`` keys used last."""

    def __init__(self, size: int = 1024) -> None:
        self.size = size
        self._statements: OrderedDict[Hashable, tuple[str, tuple[Any, ...]] | None] = OrderedDict()
        self._lock = threading.Lock()
        self._local = threading.local()  # per thread: its connections' column converters

    def rows(self, key: Hashable, alias: str, build: Callable[[], QuerySet[Any]]) -> list[Any]:
        """The rows of ``build()`` (a ``values_list`` query set on database ``alias``), read
        with the statement kept under ``key``. The caller makes sure that ``key`` determines
        the statement: every value that goes into the query set is in it."""
        with self._lock:
            found = key in self._statements
            statement = self._statements.get(key)
            if found:
                self._statements.move_to_end(key)
        if not found:
            qs = build()
            try:
                sql, params = qs.query.get_compiler(using=alias).as_sql()
                statement = (sql, tuple(params))
            except EmptyResultSet:  # a filter no row can match: no statement at all
                statement = None
            with self._lock:
                self._statements[key] = statement
                while len(self._statements) > self.size:
                    self._statements.popitem(last=False)
            return list(qs)
        if statement is None:
            return []
        connection = connections[alias]
        compiler, converters = self._converters(connection, build)
        with connection.cursor() as cursor:
            cursor.execute(*statement)
            rows = cursor.fetchall()
        if converters:
            return [tuple(row) for row in compiler.apply_converters(rows, converters)]
        return [tuple(row) for row in rows]

    def __contains__(self, key: Hashable) -> bool:
        with self._lock:
            return key in self._statements

    def clear(self) -> None:
        with self._lock:
            self._statements.clear()

    def _converters(self, connection: Any, build: Callable[[], QuerySet[Any]]) -> tuple[Any, Any]:
        """The ORM's converters of the read's columns on this thread's ``connection``, found
        by compiling the read once per thread and connection."""
        kept = getattr(self._local, "converters", None)
        if kept is None:
            kept = self._local.converters = {}
        entry = kept.get(connection.alias)
        if entry is None or entry[0] is not connection:
            compiler = build().query.get_compiler(connection=connection)
            compiler.setup_query()
            columns = [expression for expression, _, _ in compiler.select[: compiler.col_count]]
            entry = (connection, compiler, compiler.get_converters(columns))
            kept[connection.alias] = entry
        return entry[1], entry[2]

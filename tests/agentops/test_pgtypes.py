"""Timestamps read through the ORM are the instants written, in UTC, whichever loader
parses them; on PostgreSQL the connection reads them with psycopg's C loader
(``agentops.pgtypes``), and Django keeps that loader on every cursor it makes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from django.db import connection

from runs.models import Event, Run

pytestmark = [pytest.mark.engine, pytest.mark.django_db]

INSTANTS = [
    datetime(2026, 12, 2, 14, 48, 13, 123456, tzinfo=UTC),
    datetime(2026, 3, 29, 1, 30, tzinfo=UTC),  # a clock change in Europe: none in UTC
    datetime(1999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
    # Written from another zone: read back as the same instant, in UTC.
    datetime(2026, 7, 1, 9, 0, tzinfo=timezone(timedelta(hours=-7))),
    datetime(1, 1, 1, 0, 0, 1, tzinfo=UTC),
    datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC),
]


@pytest.mark.parametrize("at", INSTANTS, ids=str)
def test_an_instant_reads_back_in_utc(team, at: datetime) -> None:  # type: ignore[no-untyped-def]
    run, _ = Run.start("t-noop", {}, team=team.slug, actor="test")
    Run.objects.filter(pk=run.pk).update(created_at=at)
    read = Run.objects.values_list("created_at", flat=True).get(pk=run.pk)
    assert read == at
    assert read.tzinfo is UTC and read.utcoffset() == timedelta(0)
    assert Run.objects.get(pk=run.pk).created_at.isoformat() == at.astimezone(UTC).isoformat()


def test_a_null_reads_as_none(team) -> None:  # type: ignore[no-untyped-def]
    run, _ = Run.start("t-noop", {}, team=team.slug, actor="test")
    assert Run.objects.values_list("finished_at", flat=True).get(pk=run.pk) is None


@pytest.mark.skipif(connection.vendor != "postgresql", reason="PostgreSQL's loader only")
def test_the_connection_reads_with_the_c_loader(team) -> None:  # type: ignore[no-untyped-def]
    from psycopg import adapters
    from psycopg.postgres import types
    from psycopg.pq import Format

    oid = types["timestamptz"].oid
    with connection.cursor() as cursor:
        run, _ = Run.start("t-noop", {}, team=team.slug, actor="test")
        cursor.execute(f"SELECT created_at FROM {Event._meta.db_table} WHERE run_id = %s", [run.pk])
        (at,) = cursor.fetchone()
        loader = cursor.cursor.adapters.get_loader(oid, Format.TEXT)
    assert at == Event.objects.filter(run=run).values_list("created_at", flat=True).first()
    assert at.tzinfo is UTC
    assert loader.__name__ == "CTimestamptzLoader", loader
    assert loader.timezone == connection.timezone  # so Django's create_cursor keeps it
    assert loader.parser is adapters.get_loader(oid, Format.TEXT)
    assert loader.parser.__module__.startswith("psycopg_binary"), loader.parser  # C, not Python

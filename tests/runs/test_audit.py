"""The audit hash chains: one per run, checked by ``manage.py verify_audit``."""

from __future__ import annotations

import itertools

import pytest
from django.core.management import CommandError, call_command
from django.db import connection

from runs.audit import GENESIS, verify_chain
from runs.models import Event, Run

pytestmark = [pytest.mark.engine, pytest.mark.django_db]


def test_each_run_has_its_own_linked_chain(team, drive):
    a = drive(Run.start("t-steps", {"n": 2}, actor="t")[0].pk)
    b = drive(Run.start("t-steps", {"n": 1}, actor="t")[0].pk)
    for run in (a, b):
        events = list(Event.objects.filter(run=run).order_by("chain_seq"))
        assert [e.chain for e in events] == [str(run.pk)] * len(events)
        assert [e.chain_seq for e in events] == list(range(1, len(events) + 1))
        assert events[0].prev_hash == GENESIS
        for prev, event in itertools.pairwise(events):
            assert event.prev_hash == prev.hash
        assert verify_chain(str(run.pk)).broken_at is None


def test_verify_audit_passes_then_names_the_first_broken_link(team, drive, capsys):
    run = drive(Run.start("t-steps", {"n": 3}, actor="t")[0].pk)
    call_command("verify_audit")
    assert "every link verified" in capsys.readouterr().out
    victim = Event.objects.filter(run=run).order_by("chain_seq")[2]
    table = Event._meta.db_table
    with connection.cursor() as cur:
        if connection.vendor == "postgresql":
            cur.execute("SET CONSTRAINTS ALL IMMEDIATE")  # no pending FK checks for ALTER
            cur.execute(f"ALTER TABLE {table} DISABLE TRIGGER runs_event_immutable")
        cur.execute(f"UPDATE {table} SET actor = %s WHERE id = %s", ["forger", victim.pk])
        if connection.vendor == "postgresql":
            cur.execute(f"ALTER TABLE {table} ENABLE TRIGGER runs_event_immutable")
    with pytest.raises(CommandError, match="1 of .* audit chains are broken"):
        call_command("verify_audit")
    err = capsys.readouterr().err
    assert f"first broken link is event #{victim.pk}" in err
    assert "content does not match its hash" in err


def test_secrets_never_reach_the_event_log(team):
    Run.start("t-steps", {"n": 1}, actor="t")
    run = Run.objects.get()
    Event.append(
        "test.note",
        run=run,
        actor="t",
        data={"Authorization": "Bearer abc", "nested": {"password": "hunter2"}},
    )
    note = Event.objects.get(kind="test.note")
    assert note.data == {"Authorization": "[redacted]", "nested": {"password": "[redacted]"}}
    assert verify_chain(str(run.pk)).broken_at is None

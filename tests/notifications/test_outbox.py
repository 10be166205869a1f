"""The outbox: who is told, once, batched when things move fast, by a channel that works."""

from __future__ import annotations

from datetime import time, timedelta

import pytest
from django.core import mail
from django.utils import timezone

from approvals.models import ApprovalRequest
from notifications import fanout
from notifications.models import (
    Address,
    Channel,
    DeliveryAttempt,
    FanoutCursor,
    Message,
    Notification,
    NotificationSettings,
    Preference,
    Presence,
    Scope,
    TeamDefault,
)
from runs.models import Event, Run, RunStatus
from tests.notifications.support import make_people, pump, start

pytestmark = [pytest.mark.django_db]


@pytest.fixture
def people(team, other_team):
    return make_people(team, other_team)


@pytest.fixture
def frozen(time_machine):
    time_machine.move_to(timezone.now(), tick=False)
    return time_machine


def messages(user, channel: str) -> list[Message]:
    return list(Message.objects.filter(user=user, channel=channel).order_by("pk"))


def test_a_finished_run_tells_its_owner_by_email_and_in_app_once(people, drive, frozen):
    run = drive(start(people.owner).pk)
    assert run.status == RunStatus.SUCCEEDED
    pump()
    email = messages(people.owner, Channel.EMAIL)
    in_app = messages(people.owner, Channel.IN_APP)
    assert len(email) == 1 and len(in_app) == 1
    assert email[0].status == Message.Status.SENT and in_app[0].status == Message.Status.SENT
    sent = [m for m in mail.outbox if m.to == ["owner@example.com"]]
    assert len(sent) == 1 and sent[0].subject.startswith("Succeeded: t-steps")
    # The five questions, in order, in the plain text; the HTML part exists too.
    text = sent[0].body
    order = ["succeeded", "What comes next", "Do you need to act?", "The run:", "What went wrong"]
    positions = [text.index(q) for q in order]
    assert positions == sorted(positions)
    assert f"/runs/{run.pk}/" in text
    assert sent[0].alternatives and "text/html" in sent[0].alternatives[0][1]
    # Teammates and outsiders chose nothing: milestones of others' runs are not theirs.
    assert not Message.objects.exclude(user=people.owner).exists()
    assert DeliveryAttempt.objects.filter(ok=True).count() == 2
    # The same events read again (the cursor lost) give nothing new.
    FanoutCursor.objects.update(last_event_id=0)
    frozen.shift(timedelta(minutes=5))
    assert pump() == []
    assert Notification.objects.count() == 2


def test_events_faster_than_the_interval_become_one_digest(people, drive, frozen):
    runs = [drive(start(people.owner).pk)]
    pump()
    assert len(messages(people.owner, Channel.EMAIL)) == 1
    frozen.shift(timedelta(seconds=10))
    runs += [drive(start(people.owner).pk) for _ in range(3)]
    assert pump() == []  # within the minimum interval: held
    held = Notification.objects.filter(status="pending", channel=Channel.EMAIL)
    assert held.count() == 3 and {n.reason for n in held} == {"minimum interval"}
    frozen.shift(timedelta(seconds=51))
    made = pump()
    email = [m for m in made if m.channel == Channel.EMAIL]
    assert len(email) == 1 and email[0].count == 3
    assert email[0].subject == "3 updates on 3 run(s)"
    for run in runs[1:]:
        assert str(run.pk)[:8] in email[0].text
    assert Notification.objects.filter(status="pending").count() == 0


def test_digest_every_n_minutes(people, drive, frozen):
    Preference.objects.create(
        user=people.owner, event_type="run.succeeded", channel=Channel.EMAIL, digest_minutes=15
    )
    drive(start(people.owner).pk)
    pump()
    assert messages(people.owner, Channel.EMAIL) == []
    assert len(messages(people.owner, Channel.IN_APP)) == 1  # in-app stays immediate
    frozen.shift(timedelta(minutes=15))
    pump()
    assert len(messages(people.owner, Channel.EMAIL)) == 1


def test_quiet_hours_in_the_persons_time_zone(people, drive, time_machine):
    # 23:30 in Paris (UTC+1 in November) is 22:30 UTC.
    time_machine.move_to("2026-11-24T22:30:00+00:00", tick=False)
    NotificationSettings.objects.create(
        user=people.owner, quiet_start=time(22), quiet_end=time(7), timezone="Europe/Paris"
    )
    drive(start(people.owner).pk)
    pump()
    assert messages(people.owner, Channel.EMAIL) == []
    pending = Notification.objects.get(channel=Channel.EMAIL)
    assert pending.reason == "quiet hours"
    assert pending.due_at.isoformat() == "2026-11-25T06:00:00+00:00"  # 07:00 in Paris
    time_machine.move_to("2026-11-25T06:00:01+00:00", tick=False)
    pump()
    assert len(messages(people.owner, Channel.EMAIL)) == 1


def test_pause_all_suppresses_and_keeps_the_rows(people, drive):
    NotificationSettings.objects.create(user=people.owner, paused=True)
    drive(start(people.owner).pk)
    pump()
    assert not Message.objects.exists()
    assert set(Notification.objects.values_list("status", "reason")) == {("suppressed", "paused")}


def test_scopes_teams_workflows_and_team_defaults(people, team, drive):
    Preference.objects.create(
        user=people.mate, event_type="run.succeeded", channel=Channel.EMAIL, scope=Scope.TEAMS
    )
    Preference.objects.create(
        user=people.reviewer,
        event_type="run.succeeded",
        channel=Channel.IN_APP,
        scope=Scope.WORKFLOWS,
        workflows=["t-noop"],
    )
    drive(start(people.owner).pk)
    pump()
    assert len(messages(people.mate, Channel.EMAIL)) == 1
    assert messages(people.mate, Channel.IN_APP) == []  # default: own runs only
    assert messages(people.reviewer, Channel.IN_APP) == []
    drive(start(people.owner, "t-noop", {"n": 1}).pk)
    pump(timezone.now() + timedelta(minutes=2))
    assert len(messages(people.reviewer, Channel.IN_APP)) == 1
    assert not Message.objects.filter(user=people.outsider).exists()
    # A team default reaching the whole team, for those who chose nothing themselves.
    TeamDefault.objects.create(
        team=team, event_type="run.failed", channel=Channel.IN_APP, scope=Scope.TEAMS
    )
    run = drive(start(people.owner, "t-flaky", {"fail_times": 5, "kind": "permanent"}).pk)
    assert run.status == RunStatus.FAILED
    pump(timezone.now() + timedelta(minutes=4))
    failed = Message.objects.filter(channel=Channel.IN_APP, subject__startswith="Failed")
    assert set(failed.values_list("user__username", flat=True)) == {
        "owner",
        "mate",
        "rita",
    }


def test_approval_requests_go_to_the_deciders_and_decisions_to_the_owner(people, drive):
    run = drive(start(people.owner, "t-approve", {}).pk)
    assert run.status == RunStatus.WAITING
    pump()
    asked = Message.objects.filter(subject__startswith="Approval needed")
    assert set(asked.values_list("user__username", flat=True)) == {"rita"}
    assert "/approvals/?request=" in asked.first().text
    request = ApprovalRequest.objects.get(run=run)
    request.decide(people.reviewer, "approve")
    pump(timezone.now() + timedelta(minutes=2))
    decided = Message.objects.filter(subject__startswith="Approval approved")
    assert set(decided.values_list("user__username", flat=True)) == {"owner"}


def test_unread_approval_requests_escalate_to_email_once(people, drive, frozen):
    from approvals.emails import send_request_emails

    Preference.objects.create(
        user=people.reviewer,
        event_type="approval.requested",
        channel=Channel.EMAIL,
        enabled=False,
    )
    run = drive(start(people.owner, "t-approve", {}).pk)
    request = ApprovalRequest.objects.get(run=run)
    assert send_request_emails(request.pk, "requested") == 0  # turned off by Rita
    pump()
    assert len(messages(people.reviewer, Channel.IN_APP)) == 1
    assert not [m for m in mail.outbox if m.to == ["rita@example.com"]]
    frozen.shift(timedelta(minutes=16))
    pump()
    pump()
    sent = [m for m in mail.outbox if m.to == ["rita@example.com"]]
    assert len(sent) == 1 and sent[0].subject.startswith("Approval needed")
    assert "reply" in sent[0].extra_headers.get("Reply-To", "") or sent[0].reply_to


def test_approval_requests_are_not_emailed_twice(people, drive):
    """The approvals app emails requests itself (with a reply address); the notifications
    outbox sends them in the app and by webhook only."""
    drive(start(people.owner, "t-approve", {}).pk)
    pump()
    assert not Notification.objects.filter(
        event_type="approval.requested", channel=Channel.EMAIL
    ).exists()
    assert Notification.objects.filter(
        event_type="approval.requested", channel=Channel.IN_APP, user=people.reviewer
    ).exists()


def test_someone_watching_the_run_is_not_emailed_until_they_leave(people, drive, frozen):
    run = start(people.owner)
    Presence.objects.create(user=people.owner, run=run, connections=1)
    drive(run.pk)
    pump()
    assert messages(people.owner, Channel.EMAIL) == []
    assert len(messages(people.owner, Channel.IN_APP)) == 1
    frozen.shift(timedelta(minutes=5))
    pump()
    assert messages(people.owner, Channel.EMAIL) == []  # still watching
    Presence.objects.filter(run=run).update(connections=0, left_at=timezone.now())
    frozen.shift(timedelta(minutes=2))
    pump()
    assert messages(people.owner, Channel.EMAIL) == []  # gone, but within the grace period
    frozen.shift(timedelta(minutes=2))
    pump()
    assert len(messages(people.owner, Channel.EMAIL)) == 1


def test_an_undeliverable_address_falls_back_to_in_app(people, drive):
    Address.objects.create(email="owner@example.com", undeliverable=True, reason="bounced")
    Preference.objects.create(
        user=people.owner, event_type="run.succeeded", channel=Channel.IN_APP, enabled=False
    )
    drive(start(people.owner).pk)
    pump()
    email = messages(people.owner, Channel.EMAIL)[0]
    assert email.status == Message.Status.FAILED and "undeliverable" in email.error
    fallback = Message.objects.get(fallback_of=email)
    assert fallback.channel == Channel.IN_APP and fallback.status == Message.Status.SENT
    assert "email delivery failed" in fallback.text


def test_stalled_runs_are_a_milestone_once_per_stall(people, frozen):
    run = start(people.owner)
    Run.objects.filter(pk=run.pk).update(
        status=RunStatus.RUNNING, last_activity_at=timezone.now() - timedelta(hours=2)
    )
    pump()
    pump()
    stalled = Notification.objects.filter(event_type="run.stalled")
    assert stalled.count() == 2  # email and in-app, once
    assert Message.objects.filter(subject__startswith="Stalled").count() == 2


def test_a_burst_for_one_person_gives_at_most_two_messages_per_channel(people, frozen):
    """Many paused/warning milestones within one minute: two messages per channel, no
    duplicates, every event in exactly one message."""
    run = start(people.owner)
    n = 600
    for i in range(n):
        Event.append("run.paused", run_id=run.pk, team_id=run.team_id, actor="t", data={"i": i})
        if i == n // 3:
            pump()
        if i % 100 == 0:
            frozen.shift(timedelta(seconds=5))
    pump()
    frozen.shift(timedelta(seconds=61))
    pump()
    fanout.fan_out()  # nothing left behind
    for channel in (Channel.EMAIL, Channel.IN_APP):
        sent = messages(people.owner, channel)
        assert 1 <= len(sent) <= 2, [m.count for m in sent]
        assert sum(m.count for m in sent) == n
        rows = Notification.objects.filter(user=people.owner, channel=channel)
        assert rows.count() == n and not rows.exclude(status="batched").exists()
        assert rows.values("event_id").distinct().count() == n


def test_opening_the_request_in_the_inbox_reads_it_so_it_does_not_escalate(people, drive, frozen):
    from django.test import Client

    Preference.objects.create(
        user=people.reviewer, event_type="approval.requested", channel=Channel.EMAIL, enabled=False
    )
    run = drive(start(people.owner, "t-approve", {}).pk)
    request = ApprovalRequest.objects.get(run=run)
    pump()
    [note] = messages(people.reviewer, Channel.IN_APP)
    assert note.read_at is None
    client = Client()
    client.force_login(people.reviewer)
    assert client.get(f"/approvals/{request.pk}/").status_code == 200
    note.refresh_from_db()
    assert note.read_at is not None
    frozen.shift(timedelta(minutes=16))
    pump()
    assert not [m for m in mail.outbox if m.to == ["rita@example.com"]]

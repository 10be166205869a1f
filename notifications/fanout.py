"""From the event log to notification rows: who hears about what, by which channel.

Invariants:
- it runs in a worker (a beat sweep), never in a web request, and reads only committed events;
- each row's ``dedup_key`` is derived from the milestone (run, type, and the step or request
  or event it is about), the person and the channel, and is unique: reading an event twice, or
  a retried step announcing the same milestone again, adds nothing;
- the cursor moves past an event only once it is older than ``SETTLE`` (on PostgreSQL ids are
  taken at INSERT and become visible at COMMIT, so a younger id may still appear below the
  newest one seen); events younger than that are read again next time, harmlessly.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.db import transaction
from django.utils import timezone

from notifications.models import (
    APPROVER_TYPES,
    Channel,
    EventType,
    FanoutCursor,
    Notification,
    Preference,
    Scope,
)
from notifications.preferences import Resolver
from runs.audit import Event
from runs.models import Membership, Run

#: Events younger than this are read again next time (ids can commit out of order).
SETTLE = timedelta(seconds=5)
BATCH = 5000

#: Event kinds of the log → notification type, and what makes one milestone distinct.
KINDS: dict[str, str] = {
    "run.succeeded": EventType.RUN_SUCCEEDED,
    "run.failed": EventType.RUN_FAILED,
    "run.timed_out": EventType.RUN_TIMED_OUT,
    "run.cancelled": EventType.RUN_CANCELLED,
    "run.paused": EventType.RUN_PAUSED,
    "budget.warning": EventType.BUDGET_WARNING,
    "approval.requested": EventType.APPROVAL_REQUESTED,
    "approval.reminder": EventType.APPROVAL_EXPIRING,
    "approval.decided": EventType.APPROVAL_DECIDED,
    "approval.expired": EventType.APPROVAL_DECIDED,
}


@dataclass(frozen=True)
class Milestone:
    """One thing worth telling people, from one event (or the stalled check)."""

    type: str
    run: Run
    key: str  # what makes it distinct within its run and type
    data: dict[str, Any]
    event_id: int | None = None


def milestone_of(event: Event, run: Run) -> Milestone:
    kind = KINDS[event.kind]
    data = dict(event.data or {})
    if kind == EventType.BUDGET_WARNING:
        key = str(data.get("budget", ""))  # once per budget kind per run
    elif kind in (
        EventType.APPROVAL_REQUESTED,
        EventType.APPROVAL_EXPIRING,
        EventType.APPROVAL_DECIDED,
    ):
        key = str(data.get("request", ""))  # once per request
    elif kind == EventType.RUN_PAUSED:
        key = str(event.chain_seq)  # each pause is its own milestone
    else:
        key = ""  # a run finishes once
    data.setdefault("actor", event.actor)
    return Milestone(kind, run, key, data, event.pk)


def dedup_key(m: Milestone, channel: str, *, user_id: int | None, endpoint_id: int | None) -> str:
    who = f"u{user_id}" if user_id is not None else f"w{endpoint_id}"
    return f"{m.type}:{m.run.pk}:{m.key}:{who}:{channel}"


# ------------------------------------------------------------------ recipients
def _approvers(m: Milestone) -> list[int]:
    from approvals.models import ApprovalRequest

    request = ApprovalRequest.objects.filter(pk=m.data.get("request")).first()
    if request is None:
        return []
    return list(request.eligible_users().values_list("pk", flat=True))


def _candidates(m: Milestone, resolver: Resolver) -> list[int]:
    """People who may want to hear about ``m``: the run's owner, and the team members whose
    own choice or team default reaches wider than their own runs (looked up once per team
    and type in a burst)."""
    run = m.run
    if m.type in APPROVER_TYPES:
        key = ("approvers", m.key)
        if key not in resolver.cache:
            resolver.cache[key] = _approvers(m)
        return resolver.cache[key]
    key = ("team", run.team_id, m.type)
    if key not in resolver.cache:
        members = set(
            Membership.objects.filter(team_id=run.team_id, user__is_active=True).values_list(
                "user_id", flat=True
            )
        )
        if resolver.wide_scopes(run.team_id, m.type):
            wide = set(members)
        else:
            wide = set(
                Preference.objects.filter(user_id__in=members, event_type=m.type, enabled=True)
                .exclude(scope=Scope.MINE)
                .values_list("user_id", flat=True)
            )
        resolver.cache[key] = (members, wide)
    members, wide = resolver.cache[key]
    owner = {run.created_by_id} & members if run.created_by_id else set()
    return sorted(owner | wide)


def _wants(pref: dict[str, Any], m: Milestone, user_id: int) -> bool:
    if not pref["enabled"]:
        return False
    if m.type in APPROVER_TYPES:
        return True  # they were chosen as deciders; the scope is about runs
    scope = pref["scope"]
    if scope == Scope.MINE:
        return user_id == m.run.created_by_id
    if scope == Scope.WORKFLOWS:
        return m.run.workflow in (pref["workflows"] or [])
    return True  # teams: membership was checked when choosing candidates


def _due(pref: dict[str, Any], now: datetime) -> datetime:
    minutes = int(pref["digest_minutes"] or 0)
    if not minutes:
        return now
    # Digests go out on boundaries of N minutes, so all of a window's rows share one due time.
    step = minutes * 60
    epoch = int(now.timestamp())
    return datetime.fromtimestamp(((epoch // step) + 1) * step, tz=now.tzinfo)


def rows_for(m: Milestone, resolver: Resolver, now: datetime) -> list[Notification]:
    rows: list[Notification] = []
    people = _candidates(m, resolver)
    resolver.load_users(people)
    webhooks = resolver.webhooks(people)
    common = {
        "event_type": m.type,
        "event_id": m.event_id,
        "run": m.run,
        "team_id": m.run.team_id,
        "data": m.data,
        "created_at": now,
    }
    for user_id in people:
        for channel in Channel.values:
            if channel == Channel.WEBHOOK and user_id not in webhooks:
                continue
            if channel == Channel.EMAIL and m.type in APPROVER_TYPES:
                # The approvals app emails these itself, with a reply address to decide by
                # (approvals/emails.py, which reads the same preferences).
                continue
            pref = resolver.effective(user_id, m.type, channel, team_id=m.run.team_id)
            if not _wants(pref, m, user_id):
                continue
            rows.append(
                Notification(
                    user_id=user_id,
                    channel=channel,
                    dedup_key=dedup_key(m, channel, user_id=user_id, endpoint_id=None),
                    due_at=_due(pref, now),
                    digest_minutes=int(pref["digest_minutes"] or 0),
                    **common,
                )
            )
    if m.type not in APPROVER_TYPES:
        for endpoint_id in resolver.team_endpoints(m.run.team_id):
            rows.append(
                Notification(
                    endpoint_id=endpoint_id,
                    channel=Channel.WEBHOOK,
                    dedup_key=dedup_key(m, Channel.WEBHOOK, user_id=None, endpoint_id=endpoint_id),
                    due_at=now,
                    **common,
                )
            )
    return rows


def store(milestones: Iterable[Milestone], *, now: datetime | None = None) -> int:
    """Write the rows of ``milestones`` (rows already there, same dedup key, are skipped);
    returns how many rows were offered."""
    now = now or timezone.now()
    resolver = Resolver()
    rows = [row for m in milestones for row in rows_for(m, resolver, now)]
    if not rows:
        return 0
    # A row whose dedup key exists already (an event read twice) is skipped by the database.
    Notification.objects.bulk_create(rows, ignore_conflicts=True, batch_size=1000)
    return len(rows)


# ------------------------------------------------------------------ the sweep
def fan_out(*, now: datetime | None = None, batch: int = BATCH) -> int:
    """Read new milestone events into notifications; returns how many events were read."""
    now = now or timezone.now()
    cursor, _ = FanoutCursor.objects.get_or_create(name="events")
    events = list(
        Event.objects.filter(id__gt=cursor.last_event_id, kind__in=list(KINDS))
        .exclude(run__isnull=True)
        .order_by("id")[:batch]
    )
    if not events:
        return 0
    # Events past the cursor that an earlier pass read already are skipped: only those that
    # became visible since (committed late, or new) are fanned out.
    seen = set(cursor.recent_ids or [])
    fresh = [e for e in events if e.pk not in seen]
    runs = Run.objects.in_bulk({e.run_id for e in fresh})
    store((milestone_of(e, runs[e.run_id]) for e in fresh if e.run_id in runs), now=now)
    settled = [e.pk for e in events if e.created_at <= now - SETTLE]
    # A full batch moves on regardless, so a burst younger than SETTLE cannot stall it.
    last = events[-1].pk if len(events) == batch else (settled[-1] if settled else None)
    last = max(last or 0, cursor.last_event_id)
    recent = sorted(e.pk for e in events if e.pk > last)
    with transaction.atomic():
        FanoutCursor.objects.filter(pk=cursor.pk, last_event_id__lte=last).update(
            last_event_id=last, recent_ids=recent, updated_at=now
        )
    return len(fresh)


def stalled(*, now: datetime | None = None) -> int:
    """Runs idle past their threshold become a ``run.stalled`` milestone, once per stall."""
    now = now or timezone.now()
    found = list(Run.objects.filter(Run.stalled_condition(now))[:BATCH])
    milestones = [
        Milestone(
            EventType.RUN_STALLED,
            run,
            key=(run.last_activity_at or run.updated_at).isoformat(),
            data={
                "last_activity_at": run.last_activity_at,
                "idle_deadline_at": run.idle_deadline_at,
            },
        )
        for run in found
    ]
    store(milestones, now=now)
    return len(milestones)

"""Notifications under load: 10,000 milestone events for one person within one minute.

The events are appended to the audit log as the engine appends them (each on its run's hash
chain), spread over one simulated minute (time-machine moves the clock; the work is real), with
the notifications sweep running every simulated second as beat would run it. Then the clock
passes the minimum interval and the sweep runs once more.

Printed: messages per channel (target: at most 2), duplicates (target: 0), events accounted
for in some message (target: all), and the sweep's throughput.

    python bench/notifications.py [--events N]        # SQLite in a temporary directory
    python -m tests.servers python bench/notifications.py   # PostgreSQL (AGENTOPS_TEST_PG_URL)
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def setup(database_url: str) -> None:
    from bench.common import setup_django

    os.environ["AGENTOPS_APPS"] = ""
    setup_django(database_url)


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--events", type=int, default=10_000)
    ap.add_argument("--runs", type=int, default=50, help="runs the events are spread over")
    ap.add_argument("--quick", action="store_true", help="1,000 events")
    args = ap.parse_args(argv)
    n = 1_000 if args.quick else args.events

    pg = os.environ.get("AGENTOPS_TEST_PG_URL")
    if pg:
        from bench.common import recreate_databases, with_database

        recreate_databases(pg, ["notifications_bench"])
        url = with_database(pg, "notifications_bench")
        backend = "PostgreSQL"
    else:
        url = f"sqlite:///{tempfile.mkdtemp(prefix='agentops-notify-bench-')}/bench.sqlite3"
        backend = "SQLite"
    setup(url)

    import time_machine
    from django.contrib.auth.models import User
    from django.db.models import Count, Sum
    from django.utils import timezone

    from notifications.models import Channel, Message, Notification
    from notifications.tasks import run_sweep
    from runs.audit import Event
    from runs.models import Membership, Run, RunStatus, Team

    team, _ = Team.objects.get_or_create(slug="default", defaults={"name": "Default"})
    user = User.objects.create_user("watcher", email="watcher@example.com")
    Membership.objects.create(user=user, team=team, role=Membership.Role.OPERATOR)
    runs = [
        Run.objects.create(team=team, workflow="bench", created_by=user, status=RunStatus.RUNNING)
        for _ in range(args.runs)
    ]
    kinds = ["run.paused", "budget.warning"]

    start = timezone.now()
    per_event = timedelta(seconds=59) / n
    sweeps: list[float] = []
    append_seconds = 0.0
    with time_machine.travel(start, tick=False) as clock:
        next_sweep = start + timedelta(seconds=1)
        for i in range(n):
            run = runs[i % len(runs)]
            kind = kinds[0] if i % 10 else kinds[1]
            data = (
                {"reason": f"event {i}", "by": "person"}
                if kind == kinds[0]
                else {"budget": f"kind-{i}", "fraction": 0.8}
            )
            t0 = time.perf_counter()
            Event.append(kind, run_id=run.pk, team_id=team.pk, actor="bench", data=data)
            append_seconds += time.perf_counter() - t0
            clock.shift(per_event)
            if timezone.now() >= next_sweep:
                t0 = time.perf_counter()
                run_sweep()
                sweeps.append(time.perf_counter() - t0)
                next_sweep += timedelta(seconds=1)
        t0 = time.perf_counter()
        run_sweep()
        sweeps.append(time.perf_counter() - t0)
        clock.shift(timedelta(seconds=61))
        t0 = time.perf_counter()
        run_sweep()
        sweeps.append(time.perf_counter() - t0)

    print(f"notifications under load ({backend}): {n:,} events for one person in one minute")
    ok = True
    for channel in (Channel.EMAIL, Channel.IN_APP):
        messages = Message.objects.filter(user=user, channel=channel, fallback_of__isnull=True)
        count = messages.count()
        carried = messages.aggregate(s=Sum("count"))["s"] or 0
        rows = Notification.objects.filter(user=user, channel=channel)
        dups = rows.values("event_id").annotate(c=Count("pk")).filter(c__gt=1).count()
        unsent = rows.exclude(status="batched").count()
        sent = messages.filter(status="sent").count()
        print(
            f"  {channel:7} messages: {count} (target <= 2), sent: {sent}, events carried: "
            f"{carried:,} of {n:,}, duplicate events: {dups}, left unsent: {unsent}"
        )
        ok &= count <= 2 and carried == n and dups == 0 and unsent == 0
    busiest = max(sweeps)
    print(
        f"  sweep: {len(sweeps)} runs, total {sum(sweeps):.2f} s, slowest {busiest * 1000:.0f} ms;"
        f" {n / sum(sweeps):,.0f} events/s through fan-out, batching and delivery"
    )
    print(
        f"  appending the events themselves: {append_seconds:.2f} s ({n / append_seconds:,.0f}/s)"
    )
    largest = Message.objects.filter(user=user, channel=Channel.EMAIL).order_by("-count").first()
    if largest is not None:
        print(
            f"  largest digest: {largest.count:,} events in {len(largest.text):,} chars of text "
            f"({largest.subject!r})"
        )
    print("  result:", "OK" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

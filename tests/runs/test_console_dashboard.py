"""The dashboard and /metrics: figures per team, scoped to the viewer's teams.

Durations are PostgreSQL's ``percentile_cont`` over every finished run of the window (computed
in PostgreSQL, read and interpolated the same way on SQLite); a retry is a failed attempt after
which the step was tried again, so exhausted and permanent failures are not retries.
"""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from runs import metrics, sweeps
from runs.models import CircuitBreaker, Event, Run, RunStatus, StepAttempt, TeamDailySpend
from tests.runs.console_support import Role, make_cast, make_user, start

pytestmark = [pytest.mark.engine, pytest.mark.django_db]


@pytest.fixture
def cast(team, other_team):
    # The failures of t-svc below must not open its circuit: the runs would park, not retry.
    CircuitBreaker.objects.create(service="t-svc", failure_threshold=99)
    return make_cast(team, other_team)


def finished(workflow: str, team, status: str, seconds: float) -> Run:
    run = start(workflow, {"n": 1}, team=team)
    now = timezone.now()
    Run.objects.filter(pk=run.pk).update(
        status=status, started_at=now - timedelta(seconds=seconds), finished_at=now
    )
    return run


def wake_due(time_machine, run: Run) -> None:
    run.refresh_from_db()
    assert run.wake_at is not None
    time_machine.move_to(run.wake_at + timedelta(milliseconds=5))
    assert sweeps.wake_due_timers() >= 1


def exhaust_t_svc(team, drive, time_machine) -> Run:
    """A t-breaker run that fails on t-svc three times: two attempts retried, then the step
    is exhausted and the run fails."""
    run = drive(start("t-breaker", team=team).pk)
    for _ in range(2):
        wake_due(time_machine, run)
        run = drive(run.pk)
    assert run.status == RunStatus.FAILED
    outcomes = list(StepAttempt.objects.filter(run=run).values_list("outcome", flat=True))
    assert outcomes == ["retryable", "retryable", "exhausted"]
    return run


def recovered(run: Run) -> None:
    Event.append("run.recovered", run=run, actor="worker:x")


def windows(client) -> dict[str, Any]:
    page = client.get("/dashboard/")
    assert page.status_code == 200
    return {w.label: w for w in page.context["windows"]}


# --- the dashboard ------------------------------------------------------------------------
def test_dashboard_shows_the_figures_of_the_users_teams_only(cast, drive):
    # Sorted: 10, 20, 30, 100. Median: between 20 and 30 = 25.0. p95: position 0.95 * 3 =
    # 2.85, so 30 + 0.85 * (100 - 30) = 89.5.
    for seconds in (10, 20, 30):
        finished("t-steps", cast.team, RunStatus.SUCCEEDED, seconds)
    finished("t-steps", cast.team, RunStatus.FAILED, 100)
    other = finished("t-steps", cast.other_team, RunStatus.FAILED, 999)
    drive(start("t-breaker", team=cast.team).pk)  # one failed attempt on t-svc, retrying
    drive(start("t-breaker", team=cast.other_team).pk)
    cast.team.daily_usd_limit = Decimal("2")
    cast.team.save()
    TeamDailySpend.charge(cast.team.pk, usd=Decimal("1.7"), tokens=0, day=timezone.now().date())
    page = cast.client("viewer").get("/dashboard/")
    assert page.status_code == 200
    html = page.content.decode()
    assert "75 %" in html  # 3 of 4 finished runs succeeded
    assert "25.0 s" in html and "89.5 s" in html
    assert "t-svc" in html
    assert "85 %" in html  # $1.70 of $2
    assert "retrying call" in html  # the run that waits for its retry needs attention
    for w in page.context["windows"]:
        assert w.median_seconds == pytest.approx(25.0)
        assert w.p95_seconds == pytest.approx(89.5)
        assert w.retries_by_service == [("t-svc", 1)]  # the other team's retry is not here
    # Nothing of the other team: its run, its 999 s duration, its name.
    assert str(other.pk)[:8] not in html and "999.0 s" not in html and "16.6 min" not in html
    assert "other" not in html


def test_dashboard_needs_a_sign_in(client):
    assert client.get("/dashboard/").status_code == 302


def test_durations_are_exact_over_the_whole_window_not_a_sample(cast):
    # 11,000 finished runs, created in this order: 2,600 of 30 s, 5,800 of 10 s, 2,600 of 30 s.
    # The true median is 10 s; any 5,000 taken from either end (insertion or created_at
    # order, both directions) hold more 30 s runs than 10 s ones and would say 30 s.
    start_at = timezone.now() - timedelta(hours=1)
    spans = [30.0] * 2600 + [10.0] * 5800 + [30.0] * 2600
    Run.objects.bulk_create(
        [
            Run(
                team=cast.team,
                workflow="t-steps",
                status=RunStatus.SUCCEEDED,
                created_at=start_at + timedelta(milliseconds=i),
                started_at=start_at + timedelta(milliseconds=i),
                finished_at=start_at + timedelta(milliseconds=i, seconds=seconds),
            )
            for i, seconds in enumerate(spans)
        ],
        batch_size=1000,
    )
    w = metrics.window([cast.team], label="24h", since=timezone.now() - timedelta(hours=24))
    assert w.total == 11000
    assert w.median_seconds == pytest.approx(10.0)
    assert w.p95_seconds == pytest.approx(30.0)


def test_percentile_cont_interpolates_like_postgresql():
    assert metrics.percentile_cont([], 0.5) is None
    assert metrics.percentile_cont([7.0], 0.95) == 7.0
    assert metrics.percentile_cont([10.0, 20.0, 30.0, 100.0], 0.5) == pytest.approx(25.0)
    # Position 0.95 * 4 = 3.8: 40 + 0.8 * (100 - 40).
    assert metrics.percentile_cont([10.0, 20.0, 30.0, 40.0, 100.0], 0.95) == pytest.approx(88.0)


@pytest.mark.pg
def test_on_postgresql_the_quantiles_are_computed_by_percentile_cont(cast):
    assert connection.vendor == "postgresql"
    # Sorted: 1.5, 2.25, 7, 11.125, 20. Median 7. p95: position 3.8, so
    # 11.125 + 0.8 * (20 - 11.125) = 18.225.
    for seconds in (11.125, 1.5, 20, 2.25, 7):
        finished("t-steps", cast.team, RunStatus.SUCCEEDED, seconds)
    finished("t-steps", cast.other_team, RunStatus.SUCCEEDED, 5000)  # another team's
    with CaptureQueriesContext(connection) as queries:
        w = metrics.window([cast.team], label="24h", since=timezone.now() - timedelta(hours=24))
    assert w.median_seconds == pytest.approx(7.0)
    assert w.p95_seconds == pytest.approx(18.225)
    sql = [q["sql"] for q in queries.captured_queries if "percentile_cont" in q["sql"]]
    assert len(sql) == 1, [q["sql"] for q in queries.captured_queries]
    assert "WITHIN GROUP (ORDER BY EXTRACT(EPOCH FROM" in sql[0]
    # No query reads the runs' times to compute them in Python.
    assert not any('"finished_at" FROM' in q["sql"] for q in queries.captured_queries)


def test_retries_per_service_count_only_attempts_that_were_retried(cast, drive, time_machine):
    exhaust_t_svc(cast.team, drive, time_machine)  # 2 retried + 1 exhausted on t-svc
    # With a fallback: 2 retried on t-svc, the exhausted third hands the step to the backup.
    run = drive(start("t-breaker", {"fallback": True}, team=cast.team).pk)
    for _ in range(2):
        wake_due(time_machine, run)
        run = drive(run.pk)
    assert run.status == RunStatus.SUCCEEDED
    # A timed-out attempt that is retried, and a permanent error that never is.
    now = timezone.now()
    for attempt, (service, outcome) in enumerate(
        [("t-search", StepAttempt.Outcome.TIMEOUT), ("t-mail", StepAttempt.Outcome.PERMANENT)],
        start=1,
    ):
        StepAttempt.objects.create(
            run=run,
            seq=99,
            name="other call",
            attempt=attempt,
            outcome=outcome,
            service=service,
            started_at=now,
            finished_at=now,
        )
    w = windows(cast.client("viewer"))
    assert "t-mail" not in dict(w["24 hours"].retries_by_service)  # never retried
    assert w["24 hours"].retries_by_service == [("t-svc", 4), ("t-search", 1)]
    assert w["7 days"].retries_by_service == [("t-svc", 4), ("t-search", 1)]


def test_the_24_hour_window_leaves_out_what_is_older_the_7_day_one_does_not(
    cast, drive, time_machine
):
    now = timezone.now()
    time_machine.move_to(now - timedelta(days=3))
    old = finished("t-steps", cast.team, RunStatus.SUCCEEDED, 1000)
    recovered(old)
    exhaust_t_svc(cast.team, drive, time_machine)  # 2 retries on t-svc, 3 days ago
    time_machine.move_to(now)
    recovered(finished("t-steps", cast.team, RunStatus.SUCCEEDED, 10))
    drive(start("t-breaker", team=cast.team).pk)  # 1 retry on t-svc, now
    w = windows(cast.client("viewer"))
    day, week = w["24 hours"], w["7 days"]
    assert day.by_status == {RunStatus.SUCCEEDED: 1, RunStatus.WAITING: 1}
    assert week.by_status == {RunStatus.SUCCEEDED: 2, RunStatus.WAITING: 1, RunStatus.FAILED: 1}
    assert day.completion_rate == 1.0 and week.completion_rate == pytest.approx(2 / 3)
    assert day.median_seconds == pytest.approx(10.0) and day.p95_seconds == pytest.approx(10.0)
    # The exhausted run lasted a few ms (e), so sorted: e, 10, 1000. Median 10; p95: position
    # 0.95 * 2 = 1.9, so 10 + 0.9 * (1000 - 10) = 901, whatever e is.
    assert week.median_seconds == pytest.approx(10.0)
    assert week.p95_seconds == pytest.approx(901.0)
    assert (day.recoveries, week.recoveries) == (1, 2)
    assert day.retries_by_service == [("t-svc", 1)]
    assert week.retries_by_service == [("t-svc", 3)]


# --- /metrics -----------------------------------------------------------------------------
def scrape(client, **headers: str) -> str:
    answer = client.get("/metrics", **headers)
    assert answer.status_code == 200
    assert answer["Content-Type"].startswith("text/plain; version=0.0.4")
    return answer.content.decode()


def series(body: str) -> dict[str, str]:
    """``{'name{labels}': 'value'}`` for every sample of the exposition."""
    return dict(
        line.rsplit(" ", 1) for line in body.splitlines() if line and not line.startswith("#")
    )


def test_metrics_in_the_prometheus_format_with_team_labels(
    cast, settings, client, drive, time_machine
):
    settings.AGENTOPS_METRICS_TOKEN = "scrape-me"
    recovered(finished("t-steps", cast.team, RunStatus.SUCCEEDED, 12))
    finished("t-steps", cast.team, RunStatus.SUCCEEDED, 14)
    start("t-steps", {"n": 1}, team=cast.other_team)
    exhaust_t_svc(cast.team, drive, time_machine)  # fails after a few ms (e)
    drive(start("t-breaker", team=cast.other_team).pk)
    cast.team.daily_usd_limit = Decimal("2")
    cast.team.save()
    TeamDailySpend.charge(cast.team.pk, usd=Decimal("1.7"), tokens=0, day=timezone.now().date())
    body = scrape(client, HTTP_AUTHORIZATION="Bearer scrape-me")
    assert "# TYPE agentops_runs_in_flight gauge" in body
    samples = series(body)
    assert samples['agentops_runs_in_flight{team="other",status="queued"}'] == "1"
    assert samples['agentops_runs_in_flight{team="other",status="waiting"}'] == "1"
    assert samples['agentops_runs_finished_24h{team="default",status="succeeded"}'] == "2"
    assert samples['agentops_runs_finished_24h{team="default",status="failed"}'] == "1"
    assert samples['agentops_run_completion_ratio_24h{team="default"}'] == "0.6667"
    assert 'agentops_run_completion_ratio_24h{team="other"}' not in samples  # none finished
    # The other team's t-breaker run waits to retry: it needs attention; the queued one not.
    assert samples['agentops_runs_needing_attention{team="other"}'] == "1"
    assert samples['agentops_runs_needing_attention{team="default"}'] == "0"
    # Sorted: e, 12, 14. Median 12; p95: position 1.9, so 12 + 0.9 * (14 - 12) = 13.8.
    assert float(samples['agentops_run_duration_seconds{team="default",quantile="0.5"}']) == 12.0
    assert float(samples['agentops_run_duration_seconds{team="default",quantile="0.95"}']) == 13.8
    assert not any(k.startswith('agentops_run_duration_seconds{team="other"') for k in samples)
    # Retries: the exhausted third attempt is not one.
    assert samples['agentops_step_retries_24h{team="default",service="t-svc"}'] == "2"
    assert samples['agentops_step_retries_24h{team="other",service="t-svc"}'] == "1"
    assert samples['agentops_recoveries_24h{team="default"}'] == "1"
    assert samples['agentops_recoveries_24h{team="other"}'] == "0"
    assert Decimal(samples['agentops_team_spend_usd_today{team="default"}']) == Decimal("1.7")
    assert Decimal(samples['agentops_team_spend_usd_today{team="other"}']) == 0
    assert Decimal(samples['agentops_team_budget_usd_daily{team="default"}']) == Decimal("2")
    assert 'agentops_team_budget_usd_daily{team="other"}' not in samples  # no limit, no series


def staff_member(team) -> Any:
    user = make_user("ops", team, Role.VIEWER)
    user.is_staff = True
    user.save()
    return user


def test_without_a_token_only_signed_in_staff_read_metrics_of_their_teams(cast, settings, client):
    settings.AGENTOPS_METRICS_TOKEN = ""
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer ").status_code == 401
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer x").status_code == 401
    assert cast.client("owner").get("/metrics").status_code == 401  # signed in, not staff
    client.force_login(staff_member(cast.team))
    body = scrape(client)
    assert 'team="default"' in body and 'team="other"' not in body


def test_with_a_token_a_scraper_needs_the_bearer_header(cast, settings, client, admin_client):
    settings.AGENTOPS_METRICS_TOKEN = "scrape-me"
    answer = client.get("/metrics")
    assert answer.status_code == 401 and answer["WWW-Authenticate"] == 'Bearer realm="metrics"'
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer wrong").status_code == 401
    assert client.get("/metrics", HTTP_AUTHORIZATION="scrape-me").status_code == 401
    assert cast.client("operator").get("/metrics").status_code == 401  # not staff
    body = scrape(client, HTTP_AUTHORIZATION="Bearer scrape-me")
    assert 'team="default"' in body and 'team="other"' in body  # the scraper sees every team
    # The view also lets signed-in staff in without the header when a token is set.
    assert admin_client.get("/metrics").status_code == 200

"""The dashboard and /metrics: figures per team, scoped to the viewer's teams."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from runs.models import CircuitBreaker, Event, Run, RunStatus, TeamDailySpend
from tests.runs.console_support import make_cast, start

pytestmark = [pytest.mark.engine, pytest.mark.django_db]


@pytest.fixture
def cast(team, other_team):
    return make_cast(team, other_team)


def finished(workflow: str, team, status: str, seconds: float) -> Run:
    run = start(workflow, {"n": 1}, team=team)
    now = timezone.now()
    Run.objects.filter(pk=run.pk).update(
        status=status, started_at=now - timedelta(seconds=seconds), finished_at=now
    )
    return run


def test_dashboard_shows_the_figures_of_the_users_teams_only(cast, drive, time_machine):
    for seconds in (10, 20, 30):
        finished("t-steps", cast.team, RunStatus.SUCCEEDED, seconds)
    finished("t-steps", cast.team, RunStatus.FAILED, 40)
    other = finished("t-steps", cast.other_team, RunStatus.FAILED, 999)
    CircuitBreaker.objects.create(service="t-svc", failure_threshold=99)
    drive(start("t-breaker", team=cast.team).pk)  # one failed attempt on t-svc, retrying
    cast.team.daily_usd_limit = Decimal("2")
    cast.team.save()
    TeamDailySpend.charge(cast.team.pk, usd=Decimal("1.7"), tokens=0, day=timezone.now().date())
    page = cast.client("viewer").get("/dashboard/")
    assert page.status_code == 200
    html = page.content.decode()
    assert "75 %" in html  # 3 of 4 finished runs succeeded
    assert "20.0 s" in html or "25.0 s" in html  # the median of 10, 20, 30, 40
    assert "t-svc" in html
    assert "85 %" in html  # $1.70 of $2
    assert "retrying call" in html  # the run that waits for its retry needs attention
    # Nothing of the other team: its run, its 999 s duration, its name.
    assert str(other.pk)[:8] not in html and "999.0 s" not in html and "16.6 min" not in html
    assert "other" not in html


def test_dashboard_needs_a_sign_in(client):
    assert client.get("/dashboard/").status_code == 302


def test_metrics_in_the_prometheus_format_with_team_labels(cast, settings, client):
    settings.AGENTOPS_METRICS_TOKEN = "scrape-me"
    finished("t-steps", cast.team, RunStatus.SUCCEEDED, 12)
    start("t-steps", {"n": 1}, team=cast.other_team)
    Event.append("run.recovered", run=Run.objects.first(), actor="worker:x")
    answer = client.get("/metrics", HTTP_AUTHORIZATION="Bearer scrape-me")
    assert answer.status_code == 200
    assert answer["Content-Type"].startswith("text/plain; version=0.0.4")
    body = answer.content.decode()
    assert "# TYPE agentops_runs_in_flight gauge" in body
    assert 'agentops_runs_in_flight{team="other",status="queued"} 1' in body
    assert 'agentops_runs_finished_24h{team="default",status="succeeded"} 1' in body
    assert 'agentops_run_duration_seconds{team="default",quantile="0.5"} 12.0' in body
    assert "agentops_recoveries_24h{team=" in body


def test_metrics_access_is_restricted(cast, settings, client, admin_client):
    settings.AGENTOPS_METRICS_TOKEN = "scrape-me"
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer wrong").status_code == 401
    assert cast.client("operator").get("/metrics").status_code == 401  # not staff
    assert admin_client.get("/metrics").status_code == 200

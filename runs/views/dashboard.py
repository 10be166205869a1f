"""The dashboard (24 h and 7 days for the user's teams) and ``/metrics`` for Prometheus."""

from __future__ import annotations

import hmac

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from runs import metrics
from runs.models import RunStatus, Team
from runs.permissions import VIEW, teams_for
from runs.views.common import console_login_required

#: Colours of the status bars (SVG attributes: the CSP allows no inline styles).
STATUS_COLOURS = {
    RunStatus.QUEUED: "#6b7280",
    RunStatus.RUNNING: "#1d4ed8",
    RunStatus.WAITING: "#7c3aed",
    RunStatus.PAUSED: "#b45309",
    RunStatus.SUCCEEDED: "#15803d",
    RunStatus.FAILED: "#b91c1c",
    RunStatus.CANCELLED: "#4b5563",
    RunStatus.TIMED_OUT: "#9f1239",
}
BAR_WIDTH = 320


def _bars(by_status: dict[str, int]) -> list[dict[str, object]]:
    top = max(by_status.values(), default=0) or 1
    return [
        {
            "status": status,
            "label": RunStatus(status).label,
            "count": by_status.get(status, 0),
            "width": round(BAR_WIDTH * by_status.get(status, 0) / top),
            "colour": STATUS_COLOURS[RunStatus(status)],
            "y": i * 24,
        }
        for i, status in enumerate(RunStatus)
    ]


@require_GET
@console_login_required
def dashboard(request: HttpRequest) -> HttpResponse:
    teams = list(teams_for(request.user, VIEW))
    figures = metrics.dashboard(teams)
    for w in figures["windows"]:
        w.bars = _bars(w.by_status)
    for s in figures["spend"]:
        s.width = round(BAR_WIDTH * min(s.fraction or 0, 1))
    context = {
        **figures,
        "teams": teams,
        "nav": "dashboard",
        "bar_width": BAR_WIDTH,
        "chart_height": 24 * len(RunStatus),
    }
    return render(request, "runs/dashboard.html", context)


@require_GET
def prometheus(request: HttpRequest) -> HttpResponse:
    """The figures per team in the Prometheus text format.

    With ``AGENTOPS_METRICS_TOKEN`` set, a scraper sends it as a bearer token; without it,
    only a signed-in staff user may read them (the figures name teams and their spend).
    """
    token = settings.AGENTOPS_METRICS_TOKEN
    header = request.headers.get("Authorization", "")
    if token and hmac.compare_digest(header.encode(), f"Bearer {token}".encode()):
        teams = list(Team.objects.all())
    elif request.user.is_authenticated and request.user.is_staff:
        teams = list(teams_for(request.user, VIEW))
    else:
        response = HttpResponse("metrics need a bearer token or a staff sign-in\n", status=401)
        response["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return response
    return HttpResponse(
        metrics.prometheus(teams), content_type="text/plain; version=0.0.4; charset=utf-8"
    )

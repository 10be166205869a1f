"""Who is calling, what they may see, and how often they may call.

Two ways in: a personal API token (``Authorization: Bearer ao_…``), scoped to one team, or the
browser's Django session (CSRF enforced on unsafe methods). Either way the caller's role is read
from the database at the moment of each action (``runs.permissions.can``): tokens carry no
permissions of their own. Runs the caller may not see are answered 404, so their existence
does not leak; runs they may see but not act on are answered 403.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.db.models import QuerySet
from django.http import HttpRequest
from ninja.errors import AuthenticationError
from ninja.security import APIKeyCookie, HttpBearer

from runs.api import ratelimit
from runs.api.problems import Problem
from runs.api_models import ApiToken
from runs.models import Run, Team
from runs.permissions import VIEW, actor_for, can, runs_visible_to, teams_for

PERM_WORDS = {
    "runs.view_run": "see runs",
    "runs.start_run": "start runs",
    "runs.operate_run": "operate runs (cancel, pause, resume, retry, signal, raise budgets)",
}


@dataclass(frozen=True)
class Principal:
    """The authenticated caller: a user, through a team-scoped token or their session."""

    user: Any
    token: ApiToken | None = None

    @property
    def team_id(self) -> int | None:
        """The one team a token is scoped to (None: every team of a signed-in user)."""
        return self.token.team_id if self.token else None

    @property
    def actor(self) -> str:
        return actor_for(self.user, channel="api")

    @property
    def ident(self) -> str:
        return f"token:{self.token.pk}" if self.token else f"user:{self.user.pk}"


def check_rate(principal: Principal) -> None:
    """A fixed one-minute window per token (or user), shared by every process; over it: 429."""
    limit = int(getattr(settings, "AGENTOPS_API_RATE_PER_MINUTE", 600))
    now = time.time()
    if ratelimit.hit(principal.ident, now=now) > limit:
        wait = ratelimit.seconds_left(now)
        raise Problem(
            429,
            f"more than {limit} requests in a minute; try again in {wait} s",
            kind="rate-limited",
            headers={"Retry-After": str(wait)},
            retry_after=wait,
        )


class TokenAuth(HttpBearer):
    """``Authorization: Bearer ao_<prefix>_<secret>``; an unknown or revoked token is a 401
    (never a fall-through to the session)."""

    def authenticate(self, request: HttpRequest, token: str) -> Principal:
        found = ApiToken.authenticate(token)
        if found is None:
            raise AuthenticationError()
        found.touch()
        principal = Principal(found.user, found)
        check_rate(principal)
        return principal


class SessionAuth(APIKeyCookie):
    """The console's signed-in user. CSRF is checked (by the parent class) on unsafe methods."""

    param_name = settings.SESSION_COOKIE_NAME

    def __call__(self, request: HttpRequest) -> Principal | None:
        if "Authorization" in request.headers:
            return None  # a request that names its credentials is judged on them alone
        user = getattr(request, "user", None)
        if user is None or not user.is_authenticated:
            return None
        return super().__call__(request)

    def authenticate(self, request: HttpRequest, key: str | None) -> Principal | None:
        principal = Principal(request.user)
        check_rate(principal)
        return principal


def principal(request: HttpRequest) -> Principal:
    return request.auth  # type: ignore[attr-defined]


# --- access checks: one per kind of object - ------------------------------------------------
def visible_runs(p: Principal) -> QuerySet[Run]:
    qs = runs_visible_to(p.user)
    if p.team_id is not None:
        qs = qs.filter(team_id=p.team_id)
    return qs


def visible_team_ids(p: Principal) -> QuerySet[Team]:
    teams = teams_for(p.user, VIEW)
    if p.team_id is not None:
        teams = teams.filter(pk=p.team_id)
    return teams.values_list("pk", flat=True)


def not_found(what: str = "run") -> Problem:
    return Problem(404, f"no {what} with that id is visible to you", kind="not-found")


def get_run(request: HttpRequest, run_id: str) -> Run:
    """The run ``run_id`` if the caller may see it; else 404 (a malformed id too)."""
    try:
        pk = uuid.UUID(str(run_id))
    except ValueError:
        raise not_found() from None
    run = visible_runs(principal(request)).select_related("team").filter(pk=pk).first()
    if run is None:
        raise not_found()
    return run


def require(request: HttpRequest, team: Team | int, perm: str) -> None:
    """403 unless the caller holds ``perm`` in ``team`` right now."""
    p = principal(request)
    if p.team_id is not None and (team.pk if isinstance(team, Team) else team) != p.team_id:
        raise Problem(403, "this token is scoped to another team", kind="forbidden")
    if not can(p.user, team, perm):
        slug = team.slug if isinstance(team, Team) else str(team)
        raise Problem(
            403,
            f"your role in team {slug!r} does not allow you to {PERM_WORDS.get(perm, perm)}",
            kind="forbidden",
        )


def resolve_team(request: HttpRequest, slug: str | None, perm: str) -> Team:
    """The team a new run goes to: the token's, or the one named, or the caller's only one."""
    p = principal(request)
    if p.token is not None:
        team = p.token.team
        if slug and slug != team.slug:
            raise Problem(
                403,
                f"this token is scoped to team {team.slug!r}; it cannot act in {slug!r}",
                kind="forbidden",
            )
    elif slug:
        team = teams_for(p.user, VIEW).filter(slug=slug).first()
        if team is None:
            raise Problem(422, f"unknown team {slug!r}", kind="unknown-team", title="Unknown team")
    else:
        candidates = list(teams_for(p.user, perm)[:2])
        if len(candidates) != 1:
            raise Problem(
                422,
                "say which team the run belongs to (field 'team')",
                kind="team-required",
                title="Team required",
            )
        team = candidates[0]
    require(request, team, perm)
    return team

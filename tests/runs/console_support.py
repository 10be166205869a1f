"""People and runs for the console's tests: an owner and a teammate who operate, a teammate
who only views, and an outsider who operates another team."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.contrib.auth.models import User
from django.test import Client

from runs.models import Membership, Run, Team

Role = Membership.Role


@dataclass
class Cast:
    team: Team
    other_team: Team
    owner: User
    operator: User
    viewer: User
    outsider: User

    def client(self, who: str) -> Client:
        client = Client()
        client.force_login(getattr(self, who))
        return client


def make_user(username: str, team: Team | None = None, role: str = Role.OPERATOR) -> User:
    user = User.objects.create_user(username, password="a-long-test-password")
    if team is not None:
        Membership.objects.create(user=user, team=team, role=role)
    return user


def make_cast(team: Team, other_team: Team) -> Cast:
    return Cast(
        team=team,
        other_team=other_team,
        owner=make_user("owner", team),
        operator=make_user("lead", team),
        viewer=make_user("watcher", team, Role.VIEWER),
        outsider=make_user("stranger", other_team),
    )


def start(workflow: str, data: dict[str, Any] | None = None, **kw: Any) -> Run:
    kw.setdefault("actor", "test")
    return Run.start(workflow, data or {}, **kw)[0]


def htmx_headers(target: str = "") -> dict[str, str]:
    headers = {"HX-Request": "true"}
    if target:
        headers["HX-Target"] = target
    return headers

"""People, runs and a one-call pipeline (fan-out → batching → delivery) for the tests."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.contrib.auth.models import User
from django.utils import timezone

from notifications.models import Message
from notifications.tasks import run_sweep
from runs.models import Membership, Run, Team

Role = Membership.Role


def person(username: str, team: Team | None, role: str = Role.OPERATOR) -> User:
    user = User.objects.create_user(
        username, email=f"{username}@example.com", password="a-long-test-password"
    )
    if team is not None:
        Membership.objects.create(user=user, team=team, role=role)
    return user


@dataclass
class People:
    owner: User
    mate: User
    reviewer: User
    outsider: User


def make_people(team: Team, other_team: Team) -> People:
    return People(
        owner=person("owner", team),
        mate=person("mate", team),
        reviewer=person("rita", team, Role.REVIEWER),
        outsider=person("otto", other_team),
    )


def start(user: User, workflow: str = "t-steps", data: dict[str, Any] | None = None) -> Run:
    return Run.start(workflow, data or {"n": 1}, actor=f"user:{user}", user=user)[0]


def pump(now: Any = None) -> list[Message]:
    """Everything a sweep does, in this thread: returns the messages it made and sent."""
    made = run_sweep(now or timezone.now())["messages"]
    return list(Message.objects.filter(pk__in=made).order_by("pk"))

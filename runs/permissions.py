"""Who may do what, per team. Checked at the moment of each action, never cached per run.

A user's role in a team (``Membership.role``) maps to Django permission codenames of the
``runs`` app; superusers hold every permission in every team. Views and the API ask
``can(user, team, perm)`` right before they act (``TeamRoleBackend`` offers the same answer
as Django's ``user.has_perm(perm, run_or_team)``), and list only ``runs_visible_to(user)``;
a run of another team is answered with 404, so its existence does not leak.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

from django.db import connection
from django.db.models import QuerySet

from runs.models import Membership, Run, Team

VIEW = "runs.view_run"
START = "runs.start_run"
OPERATE = "runs.operate_run"
DECIDE = "runs.decide_approval"
ADMINISTER = "runs.administer_team"

Role = Membership.Role
ROLE_PERMISSIONS: dict[str, frozenset[str]] = {
    Role.VIEWER: frozenset({VIEW}),
    Role.REVIEWER: frozenset({VIEW, DECIDE}),
    Role.OPERATOR: frozenset({VIEW, START, OPERATE}),
    Role.ADMIN: frozenset({VIEW, START, OPERATE, DECIDE, ADMINISTER}),
}


def _roles_with(perm: str) -> list[str]:
    return [role for role, perms in ROLE_PERMISSIONS.items() if perm in perms]


@dataclass(frozen=True)
class TeamRole:
    """One of a person's teams and their role in it."""

    id: int
    slug: str
    name: str
    role: str

    def holds(self, perm: str) -> bool:
        return perm in ROLE_PERMISSIONS.get(self.role, frozenset())


def team_roles(user: Any) -> list[TeamRole]:
    """Each team of ``user`` with their role, read fresh in one query (a superuser is admin
    of every team): for a page that asks several questions of the same roles while it
    renders. An action still asks ``can`` at the moment it acts."""
    if not getattr(user, "is_authenticated", False) or not user.is_active:
        return []
    if user.is_superuser:
        rows = Team.objects.order_by("slug").values_list("pk", "slug", "name")
        return [TeamRole(pk, slug, name, Role.ADMIN) for pk, slug, name in rows]
    # Every page asks this, and the ORM took three times the query's own time to write it.
    with connection.cursor() as cursor:
        cursor.execute(_team_roles_sql(connection.vendor), [user.pk])
        return [TeamRole(*row) for row in cursor.fetchall()]


@functools.cache
def _team_roles_sql(vendor: str) -> str:
    """``Membership.objects.filter(user=user).order_by("team__slug").values_list("team_id",
    "team__slug", "team__name", "role")``, written once per database vendor (as
    ``runs.hotpath`` writes the step's statements)."""
    q = connection.ops.quote_name
    m, t = Membership._meta, Team._meta
    return (
        f"SELECT m.{q(m.get_field('team').column)}, t.{q('slug')}, t.{q('name')}, "
        f"m.{q('role')} FROM {q(m.db_table)} m INNER JOIN {q(t.db_table)} t "
        f"ON t.{q(t.pk.column)} = m.{q(m.get_field('team').column)} "
        f"WHERE m.{q(m.get_field('user').column)} = %s ORDER BY t.{q('slug')}"
    )


def teams_for(user: Any, perm: str = VIEW) -> QuerySet[Team]:
    """The teams in which ``user`` holds ``perm`` (read fresh from the database)."""
    if not getattr(user, "is_authenticated", False) or not user.is_active:
        return Team.objects.none()
    if user.is_superuser:
        return Team.objects.all()
    return Team.objects.filter(
        membership__user=user, membership__role__in=_roles_with(perm)
    ).distinct()


def can(user: Any, team: Team | int, perm: str) -> bool:
    """Whether ``user`` holds ``perm`` in ``team`` right now."""
    team_id = team.pk if isinstance(team, Team) else team
    return teams_for(user, perm).filter(pk=team_id).exists()


def runs_visible_to(user: Any) -> QuerySet[Run]:
    return Run.objects.filter(team__in=teams_for(user, VIEW))


def actor_for(user: Any, *, channel: str = "user") -> str:
    """How a person appears in the audit trail: ``user:alice``, ``api:alice``."""
    return f"{channel}:{user.get_username()}"


class TeamRoleBackend:
    """Django's permission API over team roles: ``user.has_perm("runs.operate_run", run)``
    is true when the person's role in the run's team grants it, read at that moment (an
    object with a ``team_id``, or a team itself). It answers object permissions only:
    without an object Django's ``ModelBackend`` answers as before, so a team role grants
    nothing in Django's admin. It authenticates nobody."""

    PERMISSIONS = frozenset().union(*ROLE_PERMISSIONS.values())

    def authenticate(self, request: Any, **credentials: Any) -> None:
        return None

    def get_user(self, user_id: Any) -> None:
        return None

    def has_perm(self, user_obj: Any, perm: str, obj: Any = None) -> bool:
        if obj is None or perm not in self.PERMISSIONS:
            return False
        team_id = obj.pk if isinstance(obj, Team) else getattr(obj, "team_id", None)
        return team_id is not None and can(user_obj, team_id, perm)

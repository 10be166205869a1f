"""Team roles are Django object permissions: ``user.has_perm(perm, run)`` follows the
person's role in the run's team at the moment it is asked, and grants nothing without an
object (Django's admin keeps its own model permissions)."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User

from runs.models import Membership, Team
from runs.permissions import DECIDE, OPERATE, START, VIEW
from tests.runs.console_support import make_cast, make_user, start

pytestmark = [pytest.mark.django_db]


def test_roles_answer_has_perm_for_their_teams_objects(team: Team, other_team: Team) -> None:
    cast = make_cast(team, other_team)
    run = start("t-noop", team=team, user=cast.owner)
    reviewer = make_user("rita", team, Membership.Role.REVIEWER)

    assert cast.operator.has_perm(OPERATE, run) and cast.operator.has_perm(START, team)
    assert cast.viewer.has_perm(VIEW, run) and not cast.viewer.has_perm(OPERATE, run)
    assert reviewer.has_perm(DECIDE, run) and not reviewer.has_perm(OPERATE, run)
    # Another team's run: nothing.
    assert not cast.outsider.has_perm(VIEW, run)
    # Without an object a role grants nothing (the admin's model permissions stay Django's).
    assert not cast.operator.has_perm(VIEW) and not cast.operator.has_perm(OPERATE)


def test_has_perm_is_read_at_the_moment_it_is_asked(team: Team, other_team: Team) -> None:
    cast = make_cast(team, other_team)
    run = start("t-noop", team=team, user=cast.owner)
    lead = User.objects.get(pk=cast.operator.pk)
    assert lead.has_perm(OPERATE, run)
    Membership.objects.filter(user=lead, team=team).update(role=Membership.Role.VIEWER)
    assert not lead.has_perm(OPERATE, run) and lead.has_perm(VIEW, run)
    User.objects.filter(pk=lead.pk).update(is_active=False)
    lead.refresh_from_db()
    assert not lead.has_perm(VIEW, run)

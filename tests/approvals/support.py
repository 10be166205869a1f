"""People and gated runs for the approvals' tests."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.contrib.auth.models import Group, User

from approvals.models import ApprovalRequest
from runs.models import Membership, Run, Team
from tests.conftest import drive_to_rest
from tests.runs.console_support import make_user

Role = Membership.Role


@dataclass
class Reviewers:
    team: Team
    owner: User  # starts the runs (an operator)
    alice: User  # reviewer
    bob: User  # reviewer
    carol: User  # admin
    viewer: User
    operator: User
    outsider: User  # reviewer of another team
    lead: User  # reviewer in the "leads" group (escalation target)


def make_reviewers(team: Team, other_team: Team) -> Reviewers:
    people = Reviewers(
        team=team,
        owner=make_user("owner", team, Role.OPERATOR),
        alice=make_user("alice", team, Role.REVIEWER),
        bob=make_user("bob", team, Role.REVIEWER),
        carol=make_user("carol", team, Role.ADMIN),
        viewer=make_user("viewer", team, Role.VIEWER),
        operator=make_user("operator", team, Role.OPERATOR),
        outsider=make_user("outsider", other_team, Role.REVIEWER),
        lead=make_user("lead", team, Role.REVIEWER),
    )
    people.lead.groups.add(Group.objects.get_or_create(name="leads")[0])
    return people


def start_gated(
    owner: User, data: dict[str, Any] | None = None, *, workflow: str = "t-approve"
) -> tuple[Run, ApprovalRequest]:
    """Start a run as ``owner`` and drive it to its gate."""
    run = Run.start(workflow, data or {}, actor=f"user:{owner}", user=owner)[0]
    run = drive_to_rest(run.pk)
    request = ApprovalRequest.objects.get(run=run)
    return run, request

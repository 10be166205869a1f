"""``make run``'s demo: the admin lands on runs, two of them waiting for the admin's approval."""

from __future__ import annotations

import io

import pytest
from django.contrib.auth.models import User
from django.core.management import call_command

from approvals.models import ApprovalRequest
from runs.models import Run, RunStatus

pytestmark = [pytest.mark.django_db]


def test_the_demo_admin_can_approve_the_demo_gates(team, drive, settings, tmp_path):
    settings.AGENTOPS_DATA_DIR = tmp_path
    out = io.StringIO()
    call_command("bootstrap_demo", stdout=out)
    assert "demo login: admin / " in out.getvalue()
    assert Run.objects.count() == 5
    admin = User.objects.get(username="admin")
    for workflow in ("digest-publish", "draft-email"):
        run = drive(Run.objects.get(workflow=workflow).pk)
        assert run.status == RunStatus.WAITING
        request = ApprovalRequest.objects.get(run=run)
        assert request.refusal(admin) == ""
    # Running it again starts nothing new and keeps the login.
    call_command("bootstrap_demo", stdout=io.StringIO())
    assert Run.objects.count() == 5

"""Admin for approvals: history is read-only, a pending request can be reassigned (recorded),
a decided one cannot change, and the run page lists its approvals."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from approvals.models import ApprovalRequest
from runs.models import Event
from tests.approvals.support import make_reviewers, start_gated

pytestmark = [pytest.mark.django_db]


@pytest.fixture
def people(team, other_team):
    return make_reviewers(team, other_team)


@pytest.fixture
def admin_client(db):
    client = Client()
    client.force_login(User.objects.create_superuser("root", "root@example.com", "pw-pw-pw-pw"))
    return client


def test_pages_load_and_agent_data_is_escaped(people, admin_client):
    run, request = start_gated(people.owner)
    ApprovalRequest.objects.filter(pk=request.pk).update(payload={"title": "<script>x</script>"})
    request.decide(people.alice, "reject", comment="<b>no</b>")
    for url in (
        reverse("admin:approvals_approvalrequest_changelist"),
        reverse("admin:approvals_approvalrequest_change", args=[request.pk]),
        reverse("admin:approvals_decision_changelist"),
        reverse("admin:runs_run_change", args=[run.pk]),
    ):
        response = admin_client.get(url)
        assert response.status_code == 200, url
        assert b"<script>x</script>" not in response.content
        assert b"<b>no</b>" not in response.content
    page = admin_client.get(reverse("admin:runs_run_change", args=[run.pk])).content.decode()
    assert "publish" in page and "Rejected" in page  # the inline on the run
    assert admin_client.get(reverse("admin:approvals_approvalrequest_add")).status_code == 403
    assert admin_client.get(reverse("admin:approvals_decision_add")).status_code == 403


def test_a_pending_request_can_be_reassigned_and_it_is_recorded(people, admin_client):
    run, request = start_gated(people.owner)
    url = reverse("admin:approvals_approvalrequest_change", args=[request.pk])
    new_deadline = (timezone.now() + timedelta(hours=2)).replace(microsecond=0)
    response = admin_client.post(
        url,
        {
            "approvers": '["group:leads"]',
            "escalate_to": "[]",
            "deadline_at_0": new_deadline.strftime("%Y-%m-%d"),
            "deadline_at_1": new_deadline.strftime("%H:%M:%S"),
            "remind_at_0": "",
            "remind_at_1": "",
            "escalate_at_0": "",
            "escalate_at_1": "",
            "decisions-TOTAL_FORMS": "0",
            "decisions-INITIAL_FORMS": "0",
        },
    )
    assert response.status_code == 302, response.content.decode()[:3000]
    request.refresh_from_db()
    assert request.approvers == ["group:leads"] and request.deadline_at == new_deadline
    event = Event.objects.get(run=run, kind="approval.reassigned")
    assert event.actor == "admin:root"


def test_a_decided_request_is_read_only(people, admin_client):
    _run, request = start_gated(people.owner)
    request.decide(people.alice, "approve")
    url = reverse("admin:approvals_approvalrequest_change", args=[request.pk])
    page = admin_client.get(url).content.decode()
    assert 'name="approvers"' not in page
    admin_client.post(url, {"approvers": '["group:leads"]'})
    request.refresh_from_db()
    assert request.approvers == [] and request.status == "approved"

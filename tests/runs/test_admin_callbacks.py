"""Run callbacks in Django admin: deliveries and every attempt shown read-only (the receiver's
answer escaped), redelivery as an audited action, the team's signing secret shown and rotated."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth.models import Permission, User
from django.contrib.messages import SUCCESS
from django.test import Client
from django.urls import reverse

from runs.deliveries import CallbackDelivery
from runs.models import Event, Run, RunStatus, Team
from tests.runs.callback_support import Receiver, deliver_due, with_callback

pytestmark = [pytest.mark.engine, pytest.mark.django_db]

CHANGELIST = reverse("admin:runs_callbackdelivery_changelist")


@pytest.fixture
def receiver(team: Team, settings: Any) -> Any:
    settings.AGENTOPS_ALLOW_PRIVATE_CALLBACKS = True
    r = Receiver(team.webhook_secret)
    yield r
    r.down()


@pytest.fixture
def failed(team: Team, receiver: Receiver) -> CallbackDelivery:
    """A delivery the receiver refused with a 400 and some markup in its answer."""
    run = with_callback("t-steps", receiver.url)
    receiver.answer(400, body=b"<script>alert('owned')</script>")
    Run.transition(
        run.pk, to=RunStatus.PAUSED, from_=[RunStatus.QUEUED], event="run.paused", actor="t"
    )
    assert deliver_due() == ["failed"]
    return CallbackDelivery.objects.get()


def messages_of(response: Any) -> list[tuple[int, str]]:
    return [(m.level, str(m)) for m in response.context["messages"]]


def test_deliveries_and_attempts_are_shown_read_only_and_escaped(admin_client: Client, failed):
    listing = admin_client.get(CHANGELIST)
    assert listing.status_code == 200 and b"run.paused" in listing.content
    page = admin_client.get(reverse("admin:runs_callbackdelivery_change", args=[failed.pk]))
    assert page.status_code == 200
    assert b"&lt;script&gt;alert(&#x27;owned&#x27;)&lt;/script&gt;" in page.content
    assert b"<script>alert" not in page.content
    assert b'name="_save"' not in page.content  # nothing to save
    assert admin_client.get(reverse("admin:runs_callbackdelivery_add")).status_code == 403
    attempts = admin_client.get(reverse("admin:runs_callbackattempt_changelist"))
    assert attempts.status_code == 200 and b"HTTP 400" in attempts.content


def test_redeliver_sends_again_and_is_recorded(admin_client: Client, failed, receiver):
    response = admin_client.post(
        CHANGELIST, {"action": "redeliver", "_selected_action": [failed.pk]}, follow=True
    )
    assert messages_of(response) == [(SUCCESS, "1 delivery will be sent again.")]
    failed.refresh_from_db()
    assert (failed.status, failed.attempts) == (CallbackDelivery.Status.PENDING, 0)
    assert deliver_due() == ["delivered"]
    assert receiver.by_id()[failed.message_id] == 2
    event = Event.objects.get(kind="callback.redelivery")
    assert event.actor == "admin:admin" and event.run_id == failed.run_id


def test_view_only_staff_cannot_redeliver(failed):
    viewer = User.objects.create_user("auditor", password="pw-for-the-auditor", is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_callbackdelivery"))
    client = Client()
    client.force_login(viewer)
    assert client.get(CHANGELIST).status_code == 200
    client.post(CHANGELIST, {"action": "redeliver", "_selected_action": [failed.pk]})
    failed.refresh_from_db()
    assert failed.status == CallbackDelivery.Status.FAILED


def test_the_team_secret_is_shown_and_rotated(admin_client: Client, team: Team, receiver):
    page = admin_client.get(reverse("admin:runs_team_change", args=[team.pk]))
    assert team.webhook_secret.encode() in page.content
    assert b'name="webhook_secret"' not in page.content  # shown, not editable
    old = team.webhook_secret
    response = admin_client.post(
        reverse("admin:runs_team_changelist"),
        {"action": "rotate_webhook_secret", "_selected_action": [team.pk]},
        follow=True,
    )
    assert messages_of(response)[0][0] == SUCCESS
    team.refresh_from_db()
    assert team.webhook_secret != old and team.webhook_secret.startswith("whsec_")
    event = Event.objects.get(kind="team.webhook_secret_rotated")
    assert event.chain == f"team:{team.slug}" and old not in str(event.data)
    assert team.webhook_secret not in str(event.data)
    # The next delivery is signed with the new secret.
    receiver.secret = team.webhook_secret
    run = with_callback("t-steps", receiver.url)
    Run.transition(
        run.pk, to=RunStatus.PAUSED, from_=[RunStatus.QUEUED], event="run.paused", actor="t"
    )
    assert deliver_due() == ["delivered"] and receiver.received[-1].verified

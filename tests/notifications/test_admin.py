"""Admin for notifications: every page loads with agent text escaped, the outbox is read-only,
"redeliver" sends a message again for real, team defaults are edited (and validated) there,
a disabled webhook is re-enabled and an undeliverable address says why."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.core import mail
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from notifications import preferences
from notifications.models import (
    Address,
    Channel,
    DeliveryAttempt,
    EventType,
    Message,
    Notification,
    NotificationSettings,
    Preference,
    Presence,
    Scope,
    TeamDefault,
    WebhookEndpoint,
)
from runs.models import Team
from tests.notifications.support import People, make_people, pump, start

pytestmark = [pytest.mark.django_db, pytest.mark.engine]

HOSTILE = "<script>alert('agent')</script>"


@pytest.fixture
def people(team: Team, other_team: Team) -> People:
    return make_people(team, other_team)


@pytest.fixture
def root(db: None) -> User:
    return User.objects.create_superuser("root", "root@example.com", "a-long-test-password")


@pytest.fixture
def admin(root: User) -> Client:
    client = Client()
    client.force_login(root)
    return client


def url(model: type, view: str, *args: Any) -> str:
    return reverse(f"admin:notifications_{model._meta.model_name}_{view}", args=args)


def messages_of(response: Any) -> list[str]:
    return [str(m) for m in response.context["messages"]]


def act(client: Client, model: type, action: str, pks: list[Any]) -> list[str]:
    response = client.post(
        url(model, "changelist"),
        {"action": action, "_selected_action": [str(pk) for pk in pks]},
        follow=True,
    )
    assert response.status_code == 200
    return messages_of(response)


def test_every_page_loads_and_agent_text_is_escaped(people, admin, team, drive) -> None:
    drive(start(people.owner).pk)
    pump()  # real notifications, messages and attempts
    Message.objects.filter(channel=Channel.IN_APP).update(subject=HOSTILE, text=HOSTILE)
    Notification.objects.update(reason=HOSTILE)
    DeliveryAttempt.objects.update(error=HOSTILE)
    TeamDefault.objects.create(team=team, event_type=EventType.RUN_FAILED, channel=Channel.EMAIL)
    Preference.objects.create(
        user=people.owner, event_type=EventType.RUN_FAILED, channel=Channel.EMAIL
    )
    endpoint = WebhookEndpoint.objects.create(user=people.owner, url="https://93.184.215.14/")
    NotificationSettings.objects.create(user=people.owner, webhook=endpoint)
    Address.objects.create(email="gone@example.com", undeliverable=True, reason="bounced")
    Presence.objects.create(user=people.owner, run=Message.objects.first().run, connections=1)
    models = [
        TeamDefault,
        Preference,
        NotificationSettings,
        Notification,
        Message,
        DeliveryAttempt,
        WebhookEndpoint,
        Address,
        Presence,
    ]
    for model in models:
        listing = admin.get(url(model, "changelist"))
        assert listing.status_code == 200, model
        assert HOSTILE.encode() not in listing.content
        obj = model.objects.first()
        change = admin.get(url(model, "change", obj.pk))
        assert change.status_code == 200, model
        assert HOSTILE.encode() not in change.content
    in_app = Message.objects.get(channel=Channel.IN_APP)
    page = admin.get(url(Message, "change", in_app.pk)).content.decode()
    assert "&lt;script&gt;alert(&#x27;agent&#x27;)&lt;/script&gt;" in page  # the text, shown
    assert "Delivery attempts" in page or "delivery attempt" in page.lower()  # the inline
    email = Message.objects.get(channel=Channel.EMAIL)
    page = admin.get(url(Message, "change", email.pk)).content.decode()
    assert f'href="/notifications/mail/{email.pk}/"' in page  # HTML only in the sandbox
    assert "<iframe" not in page
    # Search by person and by subject; filter by channel and status.
    found = admin.get(url(Message, "changelist"), {"q": "owner"}).content.decode()
    assert f"/notifications/message/{email.pk}/change/" in found
    found = admin.get(url(Message, "changelist"), {"channel": "email", "status": "sent"})
    assert f"/notifications/message/{email.pk}/change/" in found.content.decode()
    assert f"/notifications/message/{in_app.pk}/change/" not in found.content.decode()


def test_the_outbox_is_read_only(people, admin, drive) -> None:
    drive(start(people.owner).pk)
    pump()
    message = Message.objects.filter(channel=Channel.EMAIL).get()
    for model in (Notification, Message, DeliveryAttempt, Presence):
        assert admin.get(url(model, "add")).status_code == 403
    response = admin.post(url(Message, "change", message.pk), {"subject": "changed"})
    assert response.status_code == 403
    response = admin.post(url(Message, "delete", message.pk), {"post": "yes"})
    assert response.status_code == 403
    message.refresh_from_db()
    assert message.subject != "changed"


def test_redeliver_sends_a_failed_message_again(people, admin, root, drive) -> None:
    Address.objects.create(email="owner@example.com", undeliverable=True, reason="bounced")
    drive(start(people.owner).pk)
    pump()
    failed = Message.objects.get(channel=Channel.EMAIL, fallback_of__isnull=True)
    assert failed.status == Message.Status.FAILED and not mail.outbox
    # The person fixed their mailbox; an admin sends it again.
    Address.objects.filter(email="owner@example.com").update(undeliverable=False)
    busy = Message.objects.create(
        user=people.owner,
        channel=Channel.EMAIL,
        subject="being sent",
        text="",
        status=Message.Status.SENDING,
        lease_until=timezone.now() + timedelta(minutes=1),
    )
    said = act(admin, Message, "redeliver_messages", [failed.pk, busy.pk])
    assert said == ["1 message will be sent again. 1 being sent right now: try again in a minute."]
    failed.refresh_from_db()
    assert failed.status == Message.Status.PENDING
    assert failed.error == f"redelivery by admin:{root.username}"
    busy.refresh_from_db()
    assert busy.status == Message.Status.SENDING  # left to its worker
    pump()
    failed.refresh_from_db()
    assert failed.status == Message.Status.SENT
    assert [m.to for m in mail.outbox] == [["owner@example.com"]]
    attempts = list(failed.deliveries.order_by("at", "pk").values_list("ok", flat=True))
    assert attempts == [False, True]


def test_team_defaults_are_edited_and_validated_here(people, admin, team) -> None:
    form = {
        "team": team.pk,
        "event_type": EventType.RUN_FAILED,
        "channel": Channel.EMAIL,
        "enabled": "on",
        "scope": Scope.WORKFLOWS,
        "digest_minutes": "30",
    }
    response = admin.post(url(TeamDefault, "add"), form)
    assert response.status_code == 200  # the form again, with its error
    assert "Choose at least one workflow" in response.content.decode()
    response = admin.post(url(TeamDefault, "add"), {**form, "workflows": ["no-such-workflow"]})
    assert "not one of the available choices" in response.content.decode()
    response = admin.post(url(TeamDefault, "add"), {**form, "workflows": ["t-steps"]})
    assert response.status_code == 302
    default = TeamDefault.objects.get()
    assert (default.scope, default.workflows, default.digest_minutes) == (
        Scope.WORKFLOWS,
        ["t-steps"],
        30,
    )
    # The team's members who chose nothing follow it now.
    chosen = preferences.effective(people.mate, EventType.RUN_FAILED, Channel.EMAIL)
    assert (chosen["source"], chosen["workflows"], chosen["digest_minutes"]) == (
        "team default",
        ["t-steps"],
        30,
    )


def test_a_disabled_webhook_shows_why_and_can_be_re_enabled(people, admin) -> None:
    endpoint = WebhookEndpoint.objects.create(
        user=people.owner,
        url="https://93.184.215.14/hook",
        enabled=False,
        consecutive_failures=10,
        disabled_reason="10 failed deliveries in a row; the last: HTTP 500",
    )
    listing = admin.get(url(WebhookEndpoint, "changelist")).content.decode()
    assert "10 failed deliveries in a row; the last: HTTP 500" in listing
    said = act(admin, WebhookEndpoint, "re_enable", [endpoint.pk])
    assert said == ["1 endpoint enabled again."]
    endpoint.refresh_from_db()
    assert (endpoint.enabled, endpoint.consecutive_failures, endpoint.disabled_reason) == (
        True,
        0,
        "",
    )


def test_undeliverable_addresses_say_why(admin) -> None:
    gone = Address.objects.create(
        email="gone@example.com",
        undeliverable=True,
        reason="bounced",
        detail="550 5.1.1 <gone@example.com>: user unknown",
    )
    Address.objects.create(email="fine@example.com")
    listing = admin.get(url(Address, "changelist"), {"undeliverable__exact": "1"}).content.decode()
    assert "gone@example.com" in listing and "fine@example.com" not in listing
    assert "bounced" in listing and "550 5.1.1 &lt;gone@example.com&gt;: user unknown" in listing
    assert act(admin, Address, "mark_deliverable", [gone.pk]) == ["1 address will get email again."]
    assert not Address.is_undeliverable("gone@example.com")


def test_an_endpoint_url_is_checked_like_a_callback(people, admin) -> None:
    form = {"user": people.owner.pk, "url": "http://169.254.169.254/latest", "secret": "whsec_x"}
    response = admin.post(url(WebhookEndpoint, "add"), form)
    assert response.status_code == 200 and "metadata service" in response.content.decode()
    response = admin.post(url(WebhookEndpoint, "add"), {**form, "user": ""})
    assert "belongs to a person or to a team" in response.content.decode()
    assert not WebhookEndpoint.objects.exists()
    response = admin.post(url(WebhookEndpoint, "add"), {**form, "url": "https://93.184.215.14/h"})
    assert response.status_code == 302
    assert WebhookEndpoint.objects.get().url == "https://93.184.215.14/h"

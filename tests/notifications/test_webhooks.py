"""Notification webhooks against a real local HTTP server that verifies every delivery with the
README's snippet, fails on cue and counts duplicates by ``webhook-id``."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from notifications import delivery
from notifications.models import (
    Channel,
    Message,
    NotificationSettings,
    Preference,
    WebhookEndpoint,
)
from tests.notifications.support import make_people, pump, start
from tests.runs.callback_support import Receiver

pytestmark = [pytest.mark.django_db]


@pytest.fixture
def people(team, other_team, settings):
    settings.AGENTOPS_ALLOW_PRIVATE_CALLBACKS = True  # the receiver listens on 127.0.0.1
    return make_people(team, other_team)


@pytest.fixture
def receiver():
    r = Receiver(secret="")
    yield r
    if r.server is not None:
        r.down()


def subscribe(user, receiver: Receiver) -> WebhookEndpoint:
    endpoint = WebhookEndpoint.objects.create(user=user, url=receiver.url)
    receiver.secret = endpoint.secret
    NotificationSettings.objects.create(user=user, webhook=endpoint)
    Preference.objects.create(user=user, event_type="run.succeeded", channel=Channel.WEBHOOK)
    return endpoint


def test_a_signed_json_delivery_is_retried_and_arrives_once_by_id(people, receiver, drive):
    subscribe(people.owner, receiver)
    receiver.answer(503, headers={"Retry-After": "1"})
    receiver.answer(500)
    run = drive(start(people.owner).pk)
    pump()
    message = Message.objects.get(user=people.owner, channel=Channel.WEBHOOK)
    assert message.status == Message.Status.PENDING and message.attempts == 1
    for _ in range(2):  # due again after its backoff
        Message.objects.filter(pk=message.pk).update(next_attempt_at=timezone.now())
        delivery.deliver(message.pk)
    message.refresh_from_db()
    assert message.status == Message.Status.SENT and message.attempts == 3
    assert [r.verified for r in receiver.received] == [True, True, True]
    assert receiver.by_id() == {f"msg_{message.pk}": 3}  # one id: the receiver dedups by it
    body = receiver.received[-1].json
    assert body["type"] == "notification" and body["events"][0]["type"] == "run.succeeded"
    assert body["events"][0]["run_id"] == str(run.pk)
    attempts = list(message.deliveries.order_by("at").values_list("ok", "status_code"))
    assert attempts == [(False, 503), (False, 500), (True, 204)]


def test_a_4xx_is_permanent_and_email_carries_the_message(people, receiver, drive):
    subscribe(people.owner, receiver)
    receiver.answer(410)
    drive(start(people.owner).pk)
    pump()
    hook = Message.objects.get(user=people.owner, channel=Channel.WEBHOOK)
    assert hook.status == Message.Status.FAILED and hook.attempts == 1
    fallback = Message.objects.get(fallback_of=hook)
    assert fallback.channel == Channel.EMAIL and fallback.status == Message.Status.SENT


@pytest.mark.parametrize("status", [408, 429])
def test_408_and_429_are_retried(people, receiver, drive, status):
    subscribe(people.owner, receiver)
    receiver.answer(status)
    drive(start(people.owner).pk)
    pump()
    hook = Message.objects.get(user=people.owner, channel=Channel.WEBHOOK)
    assert hook.status == Message.Status.PENDING
    assert hook.next_attempt_at > timezone.now()


def test_an_endpoint_failing_again_and_again_is_disabled_and_its_owner_told(
    people, receiver, drive, settings
):
    settings.AGENTOPS_WEBHOOK_DISABLE_AFTER = 3
    endpoint = subscribe(people.owner, receiver)
    receiver.down()
    drive(start(people.owner).pk)
    pump()
    hook = Message.objects.get(user=people.owner, channel=Channel.WEBHOOK)
    for _ in range(2):
        Message.objects.filter(pk=hook.pk).update(next_attempt_at=timezone.now())
        delivery.deliver(hook.pk)
    endpoint.refresh_from_db()
    assert not endpoint.enabled and endpoint.consecutive_failures == 3
    assert "3 failed deliveries in a row" in endpoint.disabled_reason
    told = Message.objects.filter(user=people.owner, subject__startswith="Webhook disabled")
    assert set(told.values_list("channel", flat=True)) == {Channel.IN_APP, Channel.EMAIL}
    # The message itself now fails for good and goes on by email.
    Message.objects.filter(pk=hook.pk).update(next_attempt_at=timezone.now())
    assert delivery.deliver(hook.pk) == "failed"
    assert Message.objects.filter(fallback_of=hook, channel=Channel.EMAIL).exists()


def test_an_admin_redelivery_sends_the_same_message_again(people, receiver, drive):
    subscribe(people.owner, receiver)
    drive(start(people.owner).pk)
    pump()
    hook = Message.objects.get(user=people.owner, channel=Channel.WEBHOOK)
    assert hook.status == Message.Status.SENT
    delivery.redeliver(hook.pk, actor="admin:root")
    pump(timezone.now() + timedelta(seconds=1))
    assert receiver.by_id() == {f"msg_{hook.pk}": 2}


def test_team_webhooks_receive_the_teams_milestones(people, team, receiver, drive):
    endpoint = WebhookEndpoint.objects.create(team=team, url=receiver.url)
    receiver.secret = endpoint.secret
    drive(start(people.mate).pk)
    pump()
    assert len(receiver.received) == 1 and receiver.received[0].verified
    assert receiver.received[0].json["events"][0]["type"] == "run.succeeded"

"""Bounces and complaints from the ESP's tracking webhook (through django-anymail's own view)
mark the address undeliverable; the next message goes by the person's next channel."""

from __future__ import annotations

import base64
import json

import pytest
from django.test import Client, override_settings

from notifications.models import Address, Channel, Message
from tests.notifications.support import make_people, pump, start

pytestmark = [pytest.mark.django_db]
AUTH = "Basic " + base64.b64encode(b"esp:hook-secret").decode()


@pytest.fixture
def people(team, other_team):
    return make_people(team, other_team)


def post_postmark(payload: dict) -> int:
    response = Client().post(
        "/anymail-test/postmark/tracking/",
        json.dumps(payload),
        content_type="application/json",
        headers={"Authorization": AUTH},
    )
    return response.status_code


@override_settings(
    ROOT_URLCONF="tests.notifications.urls", ANYMAIL={"WEBHOOK_SECRET": "esp:hook-secret"}
)
def test_a_hard_bounce_makes_the_address_undeliverable_and_email_falls_back(people, drive):
    status = post_postmark(
        {
            "RecordType": "Bounce",
            "Type": "HardBounce",
            "TypeCode": 1,
            "Email": "Owner@Example.com",
            "Description": "The server was unable to deliver your message",
            "Details": "smtp;550 5.1.1 user unknown",
            "MessageID": "883953f4-6105-42a2-a16a-77a8eac79483",
            "BouncedAt": "2026-11-24T10:00:00Z",
        }
    )
    assert status == 200
    address = Address.objects.get(email="owner@example.com")
    assert address.undeliverable and address.reason == "bounced"
    assert "user unknown" in address.detail
    drive(start(people.owner).pk)
    pump()
    email = Message.objects.get(user=people.owner, channel=Channel.EMAIL, fallback_of=None)
    assert email.status == Message.Status.FAILED
    assert Message.objects.filter(fallback_of=email, channel=Channel.IN_APP).exists()


@override_settings(
    ROOT_URLCONF="tests.notifications.urls", ANYMAIL={"WEBHOOK_SECRET": "esp:hook-secret"}
)
def test_deliveries_and_opens_change_nothing_and_bad_auth_is_refused(people):
    delivered = {
        "RecordType": "Delivery",
        "Recipient": "owner@example.com",
        "MessageID": "m1",
        "DeliveredAt": "2026-11-24T10:00:00Z",
    }
    assert post_postmark(delivered) == 200
    assert not Address.objects.exists()
    response = Client().post(
        "/anymail-test/postmark/tracking/",
        json.dumps(delivered),
        content_type="application/json",
        headers={"Authorization": "Basic " + base64.b64encode(b"esp:wrong").decode()},
    )
    assert response.status_code in (400, 401, 403)

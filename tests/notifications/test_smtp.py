"""The email transport over real SMTP (an aiosmtpd server on the loopback): plain and HTML
parts with the five answers, and a server that refuses the recipient fails the message for
good, so the in-app channel carries it."""

from __future__ import annotations

import pytest
from aiosmtpd.controller import Controller
from django.test import override_settings

from notifications.models import Channel, Message, Preference
from tests.approvals.email_support import free_port, smtp_server
from tests.notifications.support import make_people, pump, start

pytestmark = [pytest.mark.django_db]


def smtp_settings(port: int) -> override_settings:
    return override_settings(
        EMAIL_BACKEND="django.core.mail.backends.smtp.EmailBackend",
        EMAIL_HOST="127.0.0.1",
        EMAIL_PORT=port,
        EMAIL_USE_TLS=False,
        EMAIL_HOST_USER="",
        EMAIL_HOST_PASSWORD="",
        EMAIL_TIMEOUT=10,
    )


@pytest.fixture
def people(team, other_team):
    return make_people(team, other_team)


def test_a_milestone_email_goes_out_over_smtp_with_both_parts(people, drive):
    run = drive(start(people.owner).pk)
    with smtp_server() as (port, inbox), smtp_settings(port):
        pump()
    [(_sender, rcpts, message)] = inbox.messages
    assert rcpts == ["owner@example.com"]
    assert message["Subject"].startswith("Succeeded: t-steps")
    text = message.get_body(("plain",)).get_content()
    html = message.get_body(("html",)).get_content()
    for answer in ("What comes next", "Do you need to act?", "What went wrong"):
        assert answer in text and answer in html
    assert f"/runs/{run.pk}/" in text
    sent = Message.objects.get(user=people.owner, channel=Channel.EMAIL)
    assert sent.status == Message.Status.SENT and sent.destination == "owner@example.com"


class Refusing:
    async def handle_RCPT(self, server, session, envelope, address, rcpt_options) -> str:
        return "550 5.1.1 mailbox unavailable"


def test_a_refused_recipient_fails_for_good_and_in_app_carries_it(people, drive):
    Preference.objects.create(
        user=people.owner, event_type="run.succeeded", channel=Channel.IN_APP, enabled=False
    )
    drive(start(people.owner).pk)
    port = free_port()
    controller = Controller(Refusing(), hostname="127.0.0.1", port=port)
    controller.start()
    try:
        with smtp_settings(port):
            pump()
    finally:
        controller.stop()
    email = Message.objects.get(user=people.owner, channel=Channel.EMAIL, fallback_of=None)
    assert email.status == Message.Status.FAILED and "refused" in email.error
    assert email.deliveries.get().permanent is True
    assert Message.objects.get(fallback_of=email).channel == Channel.IN_APP


def test_an_smtp_server_that_is_down_is_retried_later(people, drive):
    drive(start(people.owner).pk)
    with smtp_settings(free_port()):  # nothing listens there
        pump()
    email = Message.objects.get(user=people.owner, channel=Channel.EMAIL)
    assert email.status == Message.Status.PENDING and email.attempts == 1
    assert email.deliveries.get().permanent is False

"""One class per channel behind one interface: ``send(message) -> Sent``, or
``TransportError(permanent=…)``. A permanent error hands the message to the next channel; any
other is retried later with backoff (notifications/delivery.py decides, not the transport).
"""

from __future__ import annotations

import json
import smtplib
from dataclasses import dataclass
from typing import ClassVar

from django.core.mail import EmailMultiAlternatives
from django.core.serializers.json import DjangoJSONEncoder

from notifications.exceptions import TransportError
from notifications.live import publish_bell
from notifications.models import Address, Channel, Message, NotificationSettings, WebhookEndpoint

__all__ = ["EmailTransport", "InAppTransport", "Sent", "Transport", "WebhookTransport", "get"]


@dataclass(frozen=True)
class Sent:
    destination: str = ""
    provider_id: str = ""
    status_code: int | None = None


class Transport:
    channel: ClassVar[str]

    def send(self, message: Message) -> Sent:
        raise NotImplementedError


class InAppTransport(Transport):
    """The message is the in-app notification: delivering it is telling the bell."""

    channel = Channel.IN_APP

    def send(self, message: Message) -> Sent:
        if message.user_id is None:
            raise TransportError("an in-app message needs a person", permanent=True)
        publish_bell(message.user_id)
        return Sent(destination=f"user:{message.user_id}")


class EmailTransport(Transport):
    """Through Django's email backend: django-anymail's ESP backends in production, files in
    the embedded default (readable in the console's mail viewer)."""

    channel = Channel.EMAIL

    def send(self, message: Message) -> Sent:
        user = message.user
        address = (getattr(user, "email", "") or "").strip()
        if not address:
            raise TransportError("the person has no email address", permanent=True)
        if Address.is_undeliverable(address):
            raise TransportError(f"{address} is marked undeliverable", permanent=True)
        email = EmailMultiAlternatives(subject=message.subject, body=message.text, to=[address])
        if message.html:
            email.attach_alternative(message.html, "text/html")
        email.extra_headers["X-Agentops-Message"] = str(message.pk)
        try:
            email.send()
        except smtplib.SMTPRecipientsRefused as exc:
            raise TransportError(f"recipient refused: {exc}", permanent=True) from None
        except (smtplib.SMTPException, OSError) as exc:
            raise TransportError(f"SMTP: {exc}") from None
        except Exception as exc:  # an ESP's API error (anymail) says whether it is permanent
            status = getattr(getattr(exc, "response", None), "status_code", None)
            permanent = type(exc).__name__ == "AnymailRecipientsRefused" or (
                isinstance(status, int) and 400 <= status < 500 and status not in (408, 429)
            )
            raise TransportError(
                f"{type(exc).__name__}: {exc}", permanent=permanent, status_code=status
            ) from None
        status_obj = getattr(email, "anymail_status", None)
        provider_id = str(getattr(status_obj, "message_id", "") or "")
        return Sent(destination=address, provider_id=provider_id)


class WebhookTransport(Transport):
    """A signed POST (Standard Webhooks headers) of the message's JSON body, through the same
    sender as the runs' callbacks."""

    channel = Channel.WEBHOOK

    def endpoint_of(self, message: Message) -> WebhookEndpoint:
        if message.endpoint_id is not None:
            endpoint = message.endpoint
        else:
            endpoint = NotificationSettings.of(message.user_id).webhook
        if endpoint is None:
            raise TransportError("no webhook endpoint is registered", permanent=True)
        if not endpoint.enabled:
            raise TransportError(
                f"the webhook endpoint is disabled ({endpoint.disabled_reason})", permanent=True
            )
        return endpoint

    def send(self, message: Message) -> Sent:
        from runs import webhooks

        endpoint = self.endpoint_of(message)
        payload = {
            "type": "notification",
            "id": f"msg_{message.pk}",
            "subject": message.subject,
            **message.body,
        }
        body = json.dumps(payload, cls=DjangoJSONEncoder, separators=(",", ":")).encode()
        result = webhooks.send(
            endpoint.url, body, secret=endpoint.secret, message_id=f"msg_{message.pk}"
        )
        if not result.ok:
            raise TransportError(
                result.error,
                permanent=result.permanent,
                status_code=result.status_code,
                retry_after=result.retry_after,
            )
        return Sent(destination=endpoint.url, status_code=result.status_code)


TRANSPORTS: dict[str, Transport] = {
    t.channel: t for t in (EmailTransport(), InAppTransport(), WebhookTransport())
}


def get(channel: str) -> Transport:
    return TRANSPORTS[channel]

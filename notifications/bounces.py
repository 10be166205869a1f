"""What the ESP tells us about addresses: bounced, complained, rejected → undeliverable.

django-anymail normalises every supported ESP's tracking webhook into one ``tracking`` signal
(connecting to it is anymail's API, hence the one signal receiver of this app). An address
marked undeliverable makes the email transport fail permanently, so the person's next channel
carries their messages, and admin lists the address with the reason.
"""

from __future__ import annotations

from typing import Any

from django.utils import timezone

from notifications.models import Address

#: Anymail's normalised event types that mean "do not send here again".
UNDELIVERABLE = {"bounced", "complained", "rejected"}


def record_tracking(event: Any, esp_name: str = "") -> bool:
    """Apply one tracking event; True when it marked an address undeliverable."""
    if event.event_type not in UNDELIVERABLE or not event.recipient:
        return False
    detail = " ".join(
        str(x) for x in (esp_name, event.reject_reason, event.description, event.mta_response) if x
    )[:2000]
    Address.objects.update_or_create(
        email=str(event.recipient).strip().lower(),
        defaults={
            "undeliverable": True,
            "reason": event.event_type,
            "detail": detail,
            "updated_at": timezone.now(),
        },
    )
    return True


def on_tracking(sender: Any, event: Any, esp_name: str = "", **kwargs: Any) -> None:
    record_tracking(event, esp_name)

from __future__ import annotations

from django.apps import AppConfig


class ApprovalsConfig(AppConfig):
    name = "approvals"
    verbose_name = "Approvals"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # django-anymail hands inbound email to its receivers by this signal (its API for
        # every ESP's webhook): replies to approval emails decide.
        from anymail.signals import inbound

        from approvals.replies import on_anymail_inbound

        inbound.connect(on_anymail_inbound, dispatch_uid="approvals.email_replies")

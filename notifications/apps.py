from __future__ import annotations

from django.apps import AppConfig


class NotificationsConfig(AppConfig):
    name = "notifications"
    verbose_name = "Notifications"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from anymail.signals import tracking

        from notifications.bounces import on_tracking

        # django-anymail delivers every ESP's bounce/complaint webhooks through this signal.
        tracking.connect(on_tracking, dispatch_uid="agentops-notifications-tracking")

from __future__ import annotations

from django.apps import AppConfig


class RunsConfig(AppConfig):
    name = "runs"
    verbose_name = "Runs"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from django.contrib.auth.signals import user_logged_in, user_logged_out
        from django.utils.module_loading import autodiscover_modules

        from runs import live

        # Signing out closes that sign-in's open console sockets, in every process.
        user_logged_in.connect(live.name_sign_in, dispatch_uid="runs.live.sign_in")
        user_logged_out.connect(live.end_session_sockets, dispatch_uid="runs.live.session")

        # Workflows register themselves when their app's workflows.py is imported.
        autodiscover_modules("workflows")

from __future__ import annotations

from django.apps import AppConfig


class AgentopsConfig(AppConfig):
    name = "agentops"
    verbose_name = "agentops"

    def ready(self) -> None:
        from django.db.backends.signals import connection_created

        from agentops.pgtypes import use_c_timestamps

        connection_created.connect(use_c_timestamps, dispatch_uid="agentops.c_timestamps")

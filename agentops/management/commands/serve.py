"""Serve the console, the API and WebSockets with daphne, plus (by default) an embedded
worker pool and beat: the whole product in one process, on SQLite, for a laptop."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandParser


class Command(BaseCommand):
    help = "Serve agentops with daphne and an embedded Celery worker pool and beat."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8000)
        parser.add_argument(
            "--workers",
            type=int,
            default=settings.AGENTOPS_EMBEDDED_WORKERS,
            help="embedded worker threads (0: none, e.g. when separate workers run)",
        )
        parser.add_argument("--no-beat", action="store_true", help="do not run beat here")

    def handle(self, *args: Any, **options: Any) -> None:
        from daphne.endpoints import build_endpoint_description_strings
        from daphne.server import Server

        from agentops.asgi import application
        from agentops.embedded import EmbeddedCelery
        from runs import sweeps

        if settings.EMBEDDED_BROKER and options["workers"] <= 0:
            self.stderr.write(
                "warning: the in-process broker needs the embedded workers; runs will not move"
            )
        embedded = EmbeddedCelery(workers=options["workers"], beat=not options["no_beat"])
        embedded.start()
        # An in-process broker lost its messages when the last process stopped: ring now for
        # every runnable run nobody holds, instead of waiting for the first sweep.
        rung = sweeps.requeue_orphans(older_than=0)
        host, port = options["host"], options["port"]
        self.stdout.write(
            f"agentops at http://{host}:{port}/ "
            f"({'SQLite' if settings.IS_SQLITE else 'PostgreSQL'}, "
            f"{'in-process' if settings.EMBEDDED_BROKER else 'external'} broker, "
            f"{options['workers']} embedded workers, re-rang {rung} runs)"
        )
        try:
            Server(
                application=application,
                endpoints=build_endpoint_description_strings(host=host, port=port),
                verbosity=1,
            ).run()
        finally:
            embedded.stop()

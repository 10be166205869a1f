from __future__ import annotations

import json
from typing import Any

from django.core.management.base import CommandError, CommandParser

from runs.management.base import RunCommand
from runs.models import Run


class Command(RunCommand):
    help = "Deliver the event NAME (with an optional JSON payload) to a waiting run."

    def add_arguments(self, parser: CommandParser) -> None:
        super().add_arguments(parser)
        parser.add_argument("name")
        parser.add_argument("--payload", default="null", help="JSON")
        parser.add_argument("--dedup-key", default="")

    def act(self, run: Run, options: dict[str, Any]) -> Run:
        try:
            payload = json.loads(options["payload"])
        except json.JSONDecodeError as exc:
            raise CommandError(f"--payload is not valid JSON: {exc}") from None
        run.signal(options["name"], payload, actor=options["actor"], dedup_key=options["dedup_key"])
        return run

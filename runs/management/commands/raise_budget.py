from __future__ import annotations

from typing import Any

from django.core.management.base import CommandParser

from runs.management.base import RunCommand
from runs.models import Run


class Command(RunCommand):
    help = "Raise a run's budget limits and print it as JSON."

    def add_arguments(self, parser: CommandParser) -> None:
        super().add_arguments(parser)
        parser.add_argument("--usd", default=None)
        parser.add_argument("--tokens", default=None)
        parser.add_argument("--actions", default=None)
        parser.add_argument("--wall-seconds", default=None)

    def act(self, run: Run, options: dict[str, Any]) -> Run:
        return run.raise_budget(
            actor=options["actor"],
            usd=options["usd"],
            tokens=options["tokens"],
            actions=options["actions"],
            wall_seconds=options["wall_seconds"],
        )

from __future__ import annotations

from typing import Any

from django.core.management.base import CommandParser

from runs.management.base import RunCommand
from runs.models import Run


class Command(RunCommand):
    help = (
        "Retry a run from a step: a run still in progress rewinds; a failed, cancelled or "
        "timed-out run gets a new run that keeps the checkpoints before that step."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        super().add_arguments(parser)
        parser.add_argument("--from-step", type=int, default=1, help="step number (1-based)")

    def act(self, run: Run, options: dict[str, Any]) -> Run:
        return run.retry_from(options["from_step"], actor=options["actor"])

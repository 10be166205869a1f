from __future__ import annotations

from typing import Any

from runs.management.base import RunCommand
from runs.models import Run


class Command(RunCommand):
    help = "Cancel a run (recorded as an event with the actor) and print it as JSON."

    def act(self, run: Run, options: dict[str, Any]) -> Run:
        return run.cancel(actor=options["actor"])

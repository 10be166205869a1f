from __future__ import annotations

from typing import Any

from runs.management.base import RunCommand
from runs.models import Run


class Command(RunCommand):
    help = "Print a run as JSON."

    def act(self, run: Run, options: dict[str, Any]) -> Run:
        return run

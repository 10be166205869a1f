"""Shared plumbing of the run commands: JSON output and clear errors."""

from __future__ import annotations

import getpass
import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.core.serializers.json import DjangoJSONEncoder

from runs.exceptions import AgentopsError
from runs.models import Run


def default_actor() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except Exception:
        return "cli"


class RunCommand(BaseCommand):
    """A command acting on one run, printing it as JSON."""

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("run_id", help="the run's id")
        parser.add_argument("--actor", default=default_actor(), help="who is acting (recorded)")

    def get_run(self, run_id: str) -> Run:
        try:
            return Run.objects.select_related("team").get(pk=run_id)
        except (Run.DoesNotExist, ValueError, Exception) as exc:
            if isinstance(exc, Run.DoesNotExist) or "UUID" in str(exc) or "uuid" in str(exc):
                raise CommandError(f"no run with id {run_id!r}") from None
            raise

    def emit(self, run: Run, **extra: Any) -> None:
        run = Run.objects.select_related("team").get(pk=run.pk)
        self.stdout.write(json.dumps({**run.as_dict(), **extra}, cls=DjangoJSONEncoder, indent=2))

    def act(self, run: Run, options: dict[str, Any]) -> Run:  # pragma: no cover - abstract
        raise NotImplementedError

    def handle(self, *args: Any, **options: Any) -> None:
        run = self.get_run(options["run_id"])
        try:
            run = self.act(run, options)
        except AgentopsError as exc:
            raise CommandError(str(exc)) from None
        self.emit(run)

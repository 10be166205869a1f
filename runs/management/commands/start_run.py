from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.core.serializers.json import DjangoJSONEncoder

from runs.exceptions import AgentopsError
from runs.management.base import default_actor
from runs.models import Run


class Command(BaseCommand):
    help = "Start a run of WORKFLOW and print it as JSON."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("workflow")
        parser.add_argument("--input", default="{}", help="the input as a JSON object")
        parser.add_argument("--idempotency-key", default=None)
        parser.add_argument("--team", default="default", help="the team's slug")
        parser.add_argument("--budget", default=None, help='limits as JSON, e.g. {"usd": 2}')
        parser.add_argument("--deadline", type=float, default=None, help="seconds from now")
        parser.add_argument("--actor", default=default_actor())

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            data = json.loads(options["input"])
        except json.JSONDecodeError as exc:
            raise CommandError(f"--input is not valid JSON: {exc}") from None
        budget = None
        if options["budget"]:
            try:
                budget = json.loads(options["budget"])
            except json.JSONDecodeError as exc:
                raise CommandError(f"--budget is not valid JSON: {exc}") from None
            if not isinstance(budget, dict):
                raise CommandError("--budget must be a JSON object")
        deadline = options["deadline"]
        if deadline is not None and deadline <= 0:
            raise CommandError("--deadline must be a positive number of seconds")
        try:
            run, replayed = Run.start(
                options["workflow"],
                data,
                team=options["team"],
                actor=options["actor"],
                idempotency_key=options["idempotency_key"],
                budget=budget,
                deadline=timedelta(seconds=deadline) if deadline else None,
            )
        except AgentopsError as exc:
            raise CommandError(str(exc)) from None
        run = Run.objects.select_related("team").get(pk=run.pk)
        out = {**run.as_dict(), "replayed": replayed}
        self.stdout.write(json.dumps(out, cls=DjangoJSONEncoder, indent=2))

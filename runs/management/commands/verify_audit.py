from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from runs.audit import verify_chain, verify_chains


class Command(BaseCommand):
    help = "Check every audit hash chain and name the first broken link."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--chain", default=None, help="check only this chain")

    def handle(self, *args: Any, **options: Any) -> None:
        reports = [verify_chain(options["chain"])] if options["chain"] else verify_chains()
        chains = events = 0
        broken = []
        for report in reports:
            chains += 1
            events += report.events
            if report.broken_at is not None:
                broken.append(report)
                self.stderr.write(
                    f"BROKEN chain {report.chain}: first broken link is event "
                    f"#{report.broken_at} ({report.reason})"
                )
        if broken:
            raise CommandError(f"{len(broken)} of {chains} audit chains are broken")
        self.stdout.write(f"OK: {chains} chains, {events} events, every link verified")

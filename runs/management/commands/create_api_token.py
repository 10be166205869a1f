from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser

from runs.api_models import ApiToken
from runs.models import Membership, Team


class Command(BaseCommand):
    help = (
        "Create a personal API token for USERNAME, scoped to one team, and print it. "
        "It is shown only this once: only its hash is stored."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("username")
        parser.add_argument("--team", required=True, help="the team's slug")
        parser.add_argument("--name", default="", help="what the token is for (shown in lists)")

    def handle(self, *args: Any, **options: Any) -> None:
        User = get_user_model()
        try:
            user = User.objects.get(**{User.USERNAME_FIELD: options["username"]})
        except User.DoesNotExist:
            raise CommandError(f"no user {options['username']!r}") from None
        if not user.is_active:
            raise CommandError(f"user {options['username']!r} is inactive")
        team = Team.objects.filter(slug=options["team"]).first()
        if team is None:
            raise CommandError(f"unknown team {options['team']!r}")
        if not user.is_superuser and not Membership.objects.filter(user=user, team=team).exists():
            raise CommandError(
                f"{options['username']} is not a member of team {team.slug!r}; "
                "add them to the team first"
            )
        _, text = ApiToken.mint(user=user, team=team, name=options["name"][:100])
        self.stdout.write(text)

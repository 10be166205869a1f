"""Make the embedded deployment ready to look at: a demo admin and a few live demo runs."""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandParser

from runs.models import Membership, Run, Team


class Command(BaseCommand):
    help = "Create the demo admin (printing its login) and start demo runs if there are none."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--username", default="admin")
        parser.add_argument("--base-url", default="http://127.0.0.1:8000")
        parser.add_argument("--no-runs", action="store_true")

    def handle(self, *args: Any, **options: Any) -> None:
        User = get_user_model()
        username = options["username"]
        secret_file = Path(settings.DATA_DIR) / "demo-admin-password"
        user = User.objects.filter(username=username).first()
        if user is None:
            password = secrets.token_urlsafe(12)
            user = User.objects.create_superuser(username, f"{username}@localhost", password)
            secret_file.parent.mkdir(parents=True, exist_ok=True)
            secret_file.write_text(password)
            secret_file.chmod(0o600)
        elif secret_file.exists():
            password = secret_file.read_text().strip()
        else:
            password = "(unchanged: set with `manage.py changepassword`)"
        team, _ = Team.objects.get_or_create(slug="default", defaults={"name": "Default team"})
        Membership.objects.get_or_create(
            user=user, team=team, defaults={"role": Membership.Role.ADMIN}
        )
        if not options["no_runs"] and not Run.objects.exists():
            actor = f"user:{username}"
            Run.start("digest", {"limit": 40}, team=team, actor=actor, user=user)
            Run.start(
                "flaky-service",
                {"url": f"{options['base_url']}/demo/flaky", "calls": 6, "fail_first": 2},
                team=team,
                actor=actor,
                user=user,
            )
            Run.start("nap", {"seconds": 45}, team=team, actor=actor, user=user)
            # Started by the demo itself, not by the admin, so that the admin may approve
            # them: whoever starts a run cannot approve its gates (separation of duties).
            Run.start("digest-publish", {"limit": 8}, team=team, actor="system:demo")
            Run.start("draft-email", {}, team=team, actor="system:demo")
            self.stdout.write(
                "started five demo runs: digest, flaky-service, nap, and two waiting for "
                "approval (digest-publish, draft-email)"
            )
        self.stdout.write(f"demo login: {username} / {password}")

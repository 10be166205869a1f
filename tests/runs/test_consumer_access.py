"""The console's sockets follow the person's access after they open, not only at connect:
signing out closes that session's sockets (and only those), a runs list socket reads its
person afresh on every push (deactivated, or no longer a superuser: closed), and it hears
the teams its person joined since it opened."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.contrib.auth.models import User
from django.utils import timezone

from agentops.asgi import application
from runs.consumers import SIGNED_OUT
from runs.models import Membership, Run, Team
from tests.runs.console_support import make_cast, make_user, start
from tests.runs.test_consumers import (
    ORIGIN,
    connect,
    prepare_cookies,
    receive_until,
    run_async,
    signed_in,
)

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.engine]


async def open_socket(path: str, cookie: list[tuple[bytes, bytes]]) -> WebsocketCommunicator:
    communicator = WebsocketCommunicator(application, path, headers=[ORIGIN, *cookie])
    connected, _ = await communicator.connect(timeout=5)
    assert connected
    await communicator.receive_from(timeout=5)  # the current state, sent at once
    return communicator


async def closed_with(communicator: WebsocketCommunicator, *, timeout: float = 5) -> Any:
    """The close code the socket was closed with, None for the default (reading past any
    pushes before it; fails if it is not closed in time)."""
    while True:
        output = await communicator.receive_output(timeout=timeout)
        if output["type"] == "websocket.close":
            return output.get("code")


async def is_closed(communicator: WebsocketCommunicator) -> bool:
    await closed_with(communicator)
    return True


async def pause(run: Run) -> None:
    current = await database_sync_to_async(Run.objects.get)(pk=run.pk)
    await database_sync_to_async(current.pause)(actor="test")


def test_signing_out_closes_the_sockets_of_that_session_only(team: Team, other_team: Team) -> None:
    cast = make_cast(team, other_team)
    lead = make_user("ada", team, Membership.Role.ADMIN)  # may decide: has an inbox
    run = start("t-wait", team=team, user=cast.owner)
    leaving, leaving_cookie = signed_in(lead)
    _, staying_cookie = signed_in(lead)  # the same person in another browser

    async def test() -> None:
        page = await open_socket(f"/ws/runs/{run.pk}/", leaving_cookie)
        listing = await open_socket("/ws/runs/", leaving_cookie)
        bell = await open_socket("/ws/notifications/", leaving_cookie)
        inbox = await open_socket("/ws/approvals/", leaving_cookie)
        other_browser = await open_socket(f"/ws/runs/{run.pk}/", staying_cookie)
        # Pushes meanwhile (the inbox follows its teams' groups on each) change nothing.
        await pause(run)
        await receive_until(page, lambda html: "badge-paused" in html)

        # A password change gives the session a new key; the sign-in is the same.
        def cycle() -> None:
            session = leaving.session
            session.cycle_key()
            leaving.cookies[settings.SESSION_COOKIE_NAME] = session.session_key

        await database_sync_to_async(cycle)()
        response = await database_sync_to_async(leaving.post)("/logout/")
        assert response.status_code == 302

        for socket in (page, listing, bell, inbox):
            assert await closed_with(socket) == SIGNED_OUT
        # The other browser's session is still signed in: it stays open and hears changes.
        await receive_until(other_browser, lambda html: "badge-paused" in html)
        current = await database_sync_to_async(Run.objects.get)(pk=run.pk)
        await database_sync_to_async(current.resume)(actor="test")
        await receive_until(other_browser, lambda html: "badge-paused" not in html)
        await other_browser.disconnect()

    run_async(test)


def test_a_list_socket_reads_its_person_afresh_on_every_push(team: Team, other_team: Team) -> None:
    cast = make_cast(team, other_team)
    boss = User.objects.create_superuser("boss", password="a-long-test-password")
    run = start("t-wait", team=other_team, user=cast.outsider)
    prepare_cookies(boss, cast.operator)

    async def test() -> None:
        # A superuser sees every team's runs; once no longer one (and in no team), the
        # next push closes the socket instead of showing another team's table.
        boss_list, connected = await connect("/ws/runs/", boss)
        assert connected
        assert str(run.pk)[:8] in await boss_list.receive_from(timeout=5)
        await database_sync_to_async(User.objects.filter(pk=boss.pk).update)(is_superuser=False)
        await pause(run)
        assert await is_closed(boss_list)

        # A deactivated operator's list closes at the next change of their team's runs.
        lead_list, connected = await connect("/ws/runs/", cast.operator)
        assert connected
        await lead_list.receive_from(timeout=5)
        await database_sync_to_async(User.objects.filter(pk=cast.operator.pk).update)(
            is_active=False
        )
        ours = await database_sync_to_async(start)("t-wait", team=team, user=cast.owner)
        await pause(ours)
        assert await is_closed(lead_list)

    run_async(test)


def test_a_list_socket_hears_a_team_its_person_joined_since(team: Team, other_team: Team) -> None:
    cast = make_cast(team, other_team)
    newcomer = make_user("newcomer", team, Membership.Role.VIEWER)
    theirs = start("t-wait", team=other_team, user=cast.outsider)
    prepare_cookies(newcomer)

    async def test() -> None:
        listing, connected = await connect("/ws/runs/", newcomer)
        assert connected
        assert str(theirs.pk)[:8] not in await listing.receive_from(timeout=5)

        await database_sync_to_async(Membership.objects.create)(
            user=newcomer, team=other_team, role=Membership.Role.VIEWER
        )
        # Any push reads the person's teams again and listens to the new one ...
        ours = await database_sync_to_async(start)("t-wait", team=team, user=cast.owner)
        await pause(ours)
        await receive_until(listing, lambda html: str(ours.pk)[:8] in html)
        # ... so a change of the newly joined team's run is pushed too.
        later = await database_sync_to_async(start)("t-noop", team=other_team, user=cast.outsider)
        await pause(later)
        pushed = await receive_until(listing, lambda html: str(later.pk)[:8] in html)
        assert str(theirs.pk)[:8] in pushed
        await listing.disconnect()

    run_async(test)


def test_a_socket_whose_session_expired_is_closed_at_its_next_check(
    team: Team, other_team: Team, monkeypatch: Any
) -> None:
    from django.contrib.sessions.models import Session

    from runs.consumers import LiveConsumer

    monkeypatch.setattr(LiveConsumer, "REJOIN_EVERY", 0.2)
    cast = make_cast(team, other_team)
    run = start("t-wait", team=team, user=cast.owner)
    client, cookie = signed_in(cast.owner)
    key = client.cookies[settings.SESSION_COOKIE_NAME].value

    async def test() -> None:
        page = await open_socket(f"/ws/runs/{run.pk}/", cookie)
        # Checked and still signed in: the socket stays open.
        assert await page.receive_nothing(timeout=0.5)
        # The session expires (nobody signed out).
        expired = timezone.now() - timedelta(seconds=1)
        await database_sync_to_async(Session.objects.filter(session_key=key).update)(
            expire_date=expired
        )
        assert await closed_with(page) == SIGNED_OUT

    run_async(test)

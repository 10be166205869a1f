"""The bell's WebSocket against the real ASGI application: session authentication, the origin
check, and each person's own unread count pushed as rendered HTML when a message arrives or
is read elsewhere."""

from __future__ import annotations

import pytest
from channels.db import database_sync_to_async
from django.test import Client

from notifications.live import publish_bell
from notifications.models import Channel, Message
from runs.models import Team
from tests.conftest import drive_to_rest
from tests.notifications.support import People, make_people, pump, start
from tests.runs.test_consumers import connect, prepare_cookies, receive_until, run_async

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.engine]

PATH = "/ws/notifications/"


@pytest.fixture
def people(team: Team, other_team: Team) -> People:
    return make_people(team, other_team)


def shows(count: int) -> object:
    """A predicate: the pushed bell shows ``count`` unread (0: the badge is hidden)."""

    def check(html: str) -> bool:
        assert html.startswith('<span id="notifications-bell"'), html[:200]
        assert 'hx-swap-oob="true"' in html
        if count == 0:
            return " hidden" in html.split(">", 1)[0]
        return f">{count}<span" in html and " hidden" not in html.split(">", 1)[0]

    return check


def finish_a_run(people: People) -> None:
    """A run of the owner's finishes and the sweep sends its messages (in this thread)."""
    drive_to_rest(start(people.owner).pk)
    pump()


def test_the_bell_socket_refuses_strangers_and_foreign_origins(people: People) -> None:
    prepare_cookies(people.owner, None)

    async def test() -> None:
        nobody, connected = await connect(PATH, None)
        assert not connected
        await nobody.disconnect()
        evil, connected = await connect(
            PATH, people.owner, origin=(b"origin", b"http://evil.example")
        )
        assert not connected
        await evil.disconnect()

    run_async(test)


def test_each_bell_counts_its_own_persons_messages_live(people: People) -> None:
    prepare_cookies(people.owner, people.mate)
    owner_client = Client()
    owner_client.force_login(people.owner)

    async def test() -> None:
        owner, connected = await connect(PATH, people.owner)
        assert connected
        mate, connected = await connect(PATH, people.mate)
        assert connected
        # The current count at once.
        assert shows(0)(await owner.receive_from(timeout=5))
        assert shows(0)(await mate.receive_from(timeout=5))

        # The owner's run finishes: the in-app message rings the owner's bell only.
        await database_sync_to_async(finish_a_run)(people)
        await receive_until(owner, shows(1))
        assert await mate.receive_nothing(timeout=0.5)

        # Read in another tab (an HTTP POST): this bell goes quiet too.
        message = await database_sync_to_async(Message.objects.get)(
            user=people.owner, channel=Channel.IN_APP
        )
        response = await database_sync_to_async(owner_client.post)(
            f"/notifications/{message.pk}/read/"
        )
        assert response.status_code == 302
        await receive_until(owner, shows(0))
        assert await mate.receive_nothing(timeout=0.5)
        await owner.disconnect()
        await mate.disconnect()

    run_async(test)


def test_a_deactivated_person_is_disconnected(people: People) -> None:
    prepare_cookies(people.owner)

    async def test() -> None:
        owner, connected = await connect(PATH, people.owner)
        assert connected
        await owner.receive_from(timeout=5)
        await database_sync_to_async(type(people.owner).objects.filter(pk=people.owner.pk).update)(
            is_active=False
        )
        # The next change of their messages finds them gone.
        await database_sync_to_async(publish_bell)(people.owner.pk)
        output = await owner.receive_output(timeout=5)
        assert output["type"] == "websocket.close"

    run_async(test)

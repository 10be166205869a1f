"""Presence: the run page's sockets count who watches a run (two tabs are two connections),
the last one to close stamps when they left, and emails about a watched run wait until the
person has been gone for the grace period."""

from __future__ import annotations

from datetime import timedelta

import pytest
from channels.db import database_sync_to_async
from django.utils import timezone

from notifications import presence
from notifications.models import Channel, Message, Presence
from notifications.schedule import presence_grace
from runs.models import Team
from tests.conftest import drive_to_rest, wait_for
from tests.notifications.support import People, make_people, pump, start
from tests.runs.test_consumers import connect, prepare_cookies, run_async

GRACE = timedelta(minutes=3)


@pytest.fixture
def people(team: Team, other_team: Team) -> People:
    return make_people(team, other_team)


def row(people: People, run_id: object) -> Presence | None:
    return Presence.objects.filter(user=people.owner, run_id=run_id).first()


@pytest.mark.django_db
@pytest.mark.engine
def test_two_connections_count_twice_and_the_last_to_leave_stamps_the_time(
    people: People, time_machine
) -> None:
    time_machine.move_to(timezone.now(), tick=False)
    run = start(people.owner, "t-wait")
    assert not presence.watching(people.owner.pk, run.pk, grace=GRACE)
    presence.joined(people.owner.pk, run.pk)
    presence.joined(people.owner.pk, run.pk)
    assert (row(people, run.pk).connections, row(people, run.pk).left_at) == (2, None)
    presence.left(people.owner.pk, run.pk)
    assert (row(people, run.pk).connections, row(people, run.pk).left_at) == (1, None)
    assert presence.watching(people.owner.pk, run.pk, grace=GRACE)
    presence.left(people.owner.pk, run.pk)
    gone = row(people, run.pk)
    assert (gone.connections, gone.left_at) == (0, timezone.now())
    # Within the grace period they still count as watching; after it, no more.
    time_machine.shift(GRACE - timedelta(seconds=1))
    assert presence.watching(people.owner.pk, run.pk, grace=GRACE)
    time_machine.shift(timedelta(seconds=2))
    assert not presence.watching(people.owner.pk, run.pk, grace=GRACE)
    # A leave without a join never takes it below zero, nor moves the time they left.
    presence.left(people.owner.pk, run.pk)
    assert (row(people, run.pk).connections, row(people, run.pk).left_at) == (0, gone.left_at)
    # Back again: watching, and no longer "left".
    presence.joined(people.owner.pk, run.pk)
    assert (row(people, run.pk).connections, row(people, run.pk).left_at) == (1, None)
    assert presence.watching(people.owner.pk, run.pk, grace=GRACE)
    # Only this person on this run.
    assert not presence.watching(people.mate.pk, run.pk, grace=GRACE)
    assert Presence.objects.count() == 1


@pytest.mark.django_db(transaction=True)
@pytest.mark.engine
def test_the_run_page_socket_keeps_presence(people: People) -> None:
    run = start(people.owner, "t-wait")
    prepare_cookies(people.owner, people.outsider)

    def connections() -> int | None:
        found = row(people, run.pk)
        return found.connections if found else None

    async def test() -> None:
        first, connected = await connect(f"/ws/runs/{run.pk}/", people.owner)
        assert connected
        second, connected = await connect(f"/ws/runs/{run.pk}/", people.owner)
        assert connected
        # The first push comes after the join was recorded.
        await first.receive_from(timeout=5)
        await second.receive_from(timeout=5)
        assert await database_sync_to_async(connections)() == 2
        # Someone who may not see the run is refused, and leaves no trace.
        outsider, connected = await connect(f"/ws/runs/{run.pk}/", people.outsider)
        assert not connected
        await outsider.disconnect()
        assert not await database_sync_to_async(
            Presence.objects.filter(user=people.outsider).exists
        )()

        await first.disconnect()
        await database_sync_to_async(wait_for)(lambda: connections() == 1, timeout=10)
        assert await database_sync_to_async(lambda: row(people, run.pk).left_at)() is None
        await second.disconnect()
        await database_sync_to_async(wait_for)(lambda: connections() == 0, timeout=10)
        assert await database_sync_to_async(lambda: row(people, run.pk).left_at)() is not None

    run_async(test)


@pytest.mark.django_db(transaction=True)
@pytest.mark.engine
def test_no_email_while_the_owner_watches_the_run(people: People) -> None:
    run = start(people.owner, "t-wait")
    prepare_cookies(people.owner)

    def emails() -> list[Message]:
        return list(Message.objects.filter(user=people.owner, channel=Channel.EMAIL))

    async def test() -> None:
        page, connected = await connect(f"/ws/runs/{run.pk}/", people.owner)
        assert connected
        await page.receive_from(timeout=5)
        finished = await database_sync_to_async(drive_to_rest)(run.pk)
        assert finished.status == "waiting"
        await database_sync_to_async(
            lambda: run.signal("go", {"ok": True}, actor="test") and None
        )()
        await database_sync_to_async(drive_to_rest)(run.pk)
        await database_sync_to_async(pump)()
        # Seen in the page: in-app, but no email while the page is open.
        assert await database_sync_to_async(
            Message.objects.filter(user=people.owner, channel=Channel.IN_APP).exists
        )()
        assert await database_sync_to_async(emails)() == []
        await page.disconnect()

    run_async(test)
    # Gone for longer than the grace period: the email goes out after all.
    later = timezone.now() + presence_grace() + timedelta(seconds=5)
    pump(later)
    assert len(emails()) == 1

"""The inbox's WebSocket against the real ASGI application: session authentication, the
origin check, and the list of what its person may decide pushed as rendered HTML when a
request appears or is decided elsewhere."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import pytest
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer

from approvals import consumers
from approvals.live import MESSAGE_TYPE, inbox_group
from approvals.models import ApprovalRequest
from runs.models import Membership, Team
from tests.approvals.support import Reviewers, make_reviewers, start_gated
from tests.runs.test_consumers import connect, prepare_cookies, receive_until, run_async

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.engine]


@pytest.fixture
def people(team: Team, other_team: Team) -> Reviewers:
    return make_reviewers(team, other_team)


def rows(html: str) -> set[int]:
    return {int(pk) for pk in re.findall(r'id="approval-row-(\d+)"', html)}


def test_the_inbox_socket_refuses_strangers_foreign_origins_and_non_deciders(
    people: Reviewers,
) -> None:
    prepare_cookies(people.alice, people.viewer, people.owner, None)

    async def test() -> None:
        for user in (None, people.viewer, people.owner):  # nobody, a viewer, an operator
            communicator, connected = await connect("/ws/approvals/", user)
            assert not connected, user
            await communicator.disconnect()
        communicator, connected = await connect(
            "/ws/approvals/", people.alice, origin=(b"origin", b"http://evil.example")
        )
        assert not connected
        await communicator.disconnect()

    run_async(test)


def test_new_requests_appear_and_decided_ones_leave_every_open_inbox(
    people: Reviewers,
) -> None:
    prepare_cookies(people.alice, people.bob, people.outsider)
    _, first = start_gated(people.owner)

    async def test() -> None:
        alice, connected = await connect("/ws/approvals/", people.alice)
        assert connected
        bob, connected = await connect("/ws/approvals/?workflow=t-approve", people.bob)
        assert connected
        outsider, connected = await connect("/ws/approvals/", people.outsider)
        assert connected
        # The current list at once, as out-of-band swaps of the list and the nav badge.
        html = await alice.receive_from(timeout=5)
        assert html.startswith('<div id="inbox-list"') and 'hx-swap-oob="true"' in html
        assert rows(html) == {first.pk}
        assert '<span id="approvals-badge" class="nav-badge" hx-swap-oob="true">1' in html
        assert rows(await bob.receive_from(timeout=5)) == {first.pk}
        assert rows(await outsider.receive_from(timeout=5)) == set()

        # A new request appears in both reviewers' inboxes...
        _, second = await database_sync_to_async(start_gated)(people.owner)
        await receive_until(alice, lambda h: rows(h) == {first.pk, second.pk})
        await receive_until(bob, lambda h: rows(h) == {first.pk, second.pk})
        # ...and the one Bob decides (here by email) leaves Alice's inbox as well as his.
        request = await database_sync_to_async(ApprovalRequest.objects.get)(pk=first.pk)
        await database_sync_to_async(request.decide)(people.bob, "approve", channel="email")
        await receive_until(alice, lambda h: rows(h) == {second.pk})
        pushed = await receive_until(bob, lambda h: rows(h) == {second.pk})
        assert 'nav-badge" hx-swap-oob="true">1' in pushed
        # One approval of two: the count changes, and the request leaves only the inbox of
        # the reviewer who gave it.
        request = await database_sync_to_async(ApprovalRequest.objects.get)(pk=second.pk)
        await database_sync_to_async(ApprovalRequest.objects.filter(pk=second.pk).update)(quorum=2)
        request.quorum = 2
        await database_sync_to_async(request.decide)(people.alice, "approve")
        await receive_until(alice, lambda h: rows(h) == set())
        pushed = await receive_until(bob, lambda h: ">1 of 2</td>" in h)
        assert rows(pushed) == {second.pk}
        # The other team hears nothing of it.
        assert await outsider.receive_nothing(timeout=0.5)
        for communicator in (alice, bob, outsider):
            await communicator.disconnect()

    run_async(test)


def test_pushes_are_throttled_and_follow_the_persons_teams(
    people: Reviewers, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(consumers, "INTERVAL", 0.5)
    prepare_cookies(people.alice)
    start_gated(people.owner)

    async def test() -> None:
        alice, connected = await connect("/ws/approvals/", people.alice)
        assert connected
        await alice.receive_from(timeout=5)
        layer = get_channel_layer()
        group = inbox_group(people.team.pk)
        message: dict[str, Any] = {"type": MESSAGE_TYPE, "team_id": people.team.pk}
        for _ in range(20):
            await layer.group_send(group, message)
        # One push for the burst (after the interval), then nothing more.
        loop = asyncio.get_running_loop()
        started = loop.time()
        await alice.receive_from(timeout=5)
        assert await alice.receive_nothing(timeout=0.8)
        assert loop.time() - started < 3
        # Her role is taken away: the next push closes the socket instead.
        await database_sync_to_async(Membership.objects.filter(user=people.alice).update)(
            role=Membership.Role.VIEWER
        )
        await layer.group_send(group, message)
        output = await alice.receive_output(timeout=5)
        assert output["type"] == "websocket.close"

    run_async(test)

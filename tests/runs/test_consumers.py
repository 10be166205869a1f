"""The console's WebSockets against the real ASGI application: session authentication, the
origin check, refusing people who may not see the run, and rendered partials (not JSON)
pushed after a run changes."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from channels.db import database_sync_to_async
from channels.layers import channel_layers, get_channel_layer
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.contrib.auth.models import User
from django.db import connections
from django.test import Client

from agentops.asgi import application
from runs import live
from runs.models import Run, RunStatus, Team
from tests.runs.console_support import make_cast, start

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.engine]
ORIGIN = (b"origin", b"http://localhost")


def signed_in(user: User) -> tuple[Client, list[tuple[bytes, bytes]]]:
    """A client signed in as ``user``, and the cookie header of its session."""
    client = Client()
    client.force_login(user)
    key = client.cookies[settings.SESSION_COOKIE_NAME].value
    return client, [(b"cookie", f"{settings.SESSION_COOKIE_NAME}={key}".encode())]


def session_cookie(user: User | None) -> list[tuple[bytes, bytes]]:
    return [] if user is None else signed_in(user)[1]


def run_async(test: Callable[[], Awaitable[None]]) -> None:
    """Run ``test`` on a new event loop with a channel layer of its own (a Redis layer's
    connections belong to the loop that opened them)."""
    channel_layers.backends.clear()

    async def main() -> None:
        try:
            await test()
        finally:
            # The consumers' database thread keeps its connection otherwise, and the test
            # database could not be dropped at the end.
            await database_sync_to_async(connections.close_all)()

    asyncio.run(main())


async def connect(
    path: str, user: User | None, *, origin: tuple[bytes, bytes] = ORIGIN
) -> tuple[WebsocketCommunicator, bool]:
    communicator = WebsocketCommunicator(
        application, path, headers=[origin, *session_cookie_async_cache[user]]
    )
    connected, _ = await communicator.connect(timeout=5)
    return communicator, connected


session_cookie_async_cache: dict[Any, list[tuple[bytes, bytes]]] = {}


def prepare_cookies(*users: User | None) -> None:
    for user in users:
        session_cookie_async_cache[user] = session_cookie(user)


async def receive_until(
    communicator: WebsocketCommunicator, predicate: Callable[[str], bool], *, timeout: float = 10
) -> str:
    """Read pushes until one matches (earlier pushes may show an earlier state)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        remaining = deadline - loop.time()
        assert remaining > 0, "no matching push"
        html = await communicator.receive_from(timeout=remaining)
        if predicate(html):
            return html


def test_the_run_socket_refuses_outsiders_strangers_and_foreign_origins(
    team: Team, other_team: Team
) -> None:
    cast = make_cast(team, other_team)
    run = start("t-wait", team=team, user=cast.owner)
    prepare_cookies(cast.owner, cast.outsider, None)

    async def test() -> None:
        for user in (cast.outsider, None):
            communicator, connected = await connect(f"/ws/runs/{run.pk}/", user)
            assert not connected
            await communicator.disconnect()
        communicator, connected = await connect(
            f"/ws/runs/{run.pk}/", cast.owner, origin=(b"origin", b"http://evil.example")
        )
        assert not connected
        await communicator.disconnect()
        communicator, connected = await connect(
            "/ws/runs/00000000-0000-4000-8000-000000000000/", cast.owner
        )
        assert not connected
        await communicator.disconnect()

    run_async(test)


def test_the_run_socket_pushes_the_rendered_partial_after_a_change(
    team: Team, other_team: Team
) -> None:
    cast = make_cast(team, other_team)
    run = start("t-wait", team=team, user=cast.owner)
    prepare_cookies(cast.owner, cast.viewer)

    async def test() -> None:
        owner, connected = await connect(f"/ws/runs/{run.pk}/", cast.owner)
        assert connected
        viewer, connected = await connect(f"/ws/runs/{run.pk}/", cast.viewer)
        assert connected
        first = await owner.receive_from(timeout=5)  # the current state, at once
        assert first.startswith('<section id="run-live"') and 'hx-swap-oob="true"' in first
        await viewer.receive_from(timeout=5)

        current = await database_sync_to_async(Run.objects.get)(pk=run.pk)
        await database_sync_to_async(current.pause)(actor="user:owner")

        pushed = await receive_until(owner, lambda html: "badge-paused" in html)
        assert pushed.startswith('<section id="run-live"')
        assert f"/runs/{run.pk}/resume/" in pushed  # the owner may resume
        seen = await receive_until(viewer, lambda html: "badge-paused" in html)
        assert "/resume/" not in seen  # a viewer gets no buttons
        await owner.disconnect()
        await viewer.disconnect()

    run_async(test)


def test_a_server_offering_a_direct_send_gets_the_hand_overs_through_it(
    team: Team, other_team: Team
) -> None:
    """Under daphne each socket's direct send is in the scope's extensions
    (``agentops.wsframes``, tested against a real daphne there): the run hub hands changes
    over through it, and falls back to the ordinary send when it refuses (a socket that is
    no longer open)."""
    from agentops.wsframes import EXTENSION

    cast = make_cast(team, other_team)
    run = start("t-wait", team=team, user=cast.owner)
    prepare_cookies(cast.owner)

    async def test() -> None:
        direct: list[str] = []
        accepting = [True]

        def send_text(text: str) -> bool:
            if accepting[0]:
                direct.append(text)
            return accepting[0]

        owner = WebsocketCommunicator(
            application,
            f"/ws/runs/{run.pk}/",
            headers=[ORIGIN, *session_cookie_async_cache[cast.owner]],
        )
        owner.scope["extensions"] = {EXTENSION: {"send_text": send_text}}
        connected, _ = await owner.connect(timeout=5)
        assert connected
        assert (await owner.receive_from(timeout=5)).startswith('<section id="run-live"')

        current = await database_sync_to_async(Run.objects.get)(pk=run.pk)
        await database_sync_to_async(current.pause)(actor="user:owner")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 10
        while not any("badge-paused" in html for html in direct) and loop.time() < deadline:
            await asyncio.sleep(0.02)
        assert any("badge-paused" in html for html in direct)
        assert await owner.receive_nothing(timeout=0.2)  # not sent twice

        accepting[0] = False
        await database_sync_to_async(current.resume)(actor="user:owner")
        await receive_until(owner, lambda html: "badge-paused" not in html)
        await owner.disconnect()

    run_async(test)


def test_the_list_socket_pushes_the_table_of_the_users_teams(team: Team, other_team: Team) -> None:
    cast = make_cast(team, other_team)
    prepare_cookies(cast.owner, cast.outsider, None)

    async def test() -> None:
        nobody, connected = await connect("/ws/runs/", None)
        assert not connected
        await nobody.disconnect()
        owner, connected = await connect("/ws/runs/?workflow=t-noop", cast.owner)
        assert connected
        outsider, connected = await connect("/ws/runs/", cast.outsider)
        assert connected
        first = await owner.receive_from(timeout=5)
        assert first.startswith('<div id="runs-table"') and "No runs match." in first
        await outsider.receive_from(timeout=5)

        # A run is announced by its transitions (here: paused before a worker took it).
        for name in ("t-noop", "t-steps"):
            run = await database_sync_to_async(start)(name, team=team, user=cast.owner)
            await database_sync_to_async(run.pause)(actor="user:owner")
        pushed = await receive_until(owner, lambda html: ">t-noop</a>" in html)
        assert ">t-steps</a>" not in pushed  # the socket's filters apply
        # The other team's member hears nothing about this team's runs.
        assert await outsider.receive_nothing(timeout=0.5)
        await owner.disconnect()
        await outsider.disconnect()

    run_async(test)


def test_a_person_whose_access_ends_is_disconnected(team: Team, other_team: Team) -> None:
    cast = make_cast(team, other_team)
    run = start("t-wait", team=team, user=cast.owner)
    prepare_cookies(cast.viewer)

    async def test() -> None:
        viewer, connected = await connect(f"/ws/runs/{run.pk}/", cast.viewer)
        assert connected
        await viewer.receive_from(timeout=5)
        from runs.models import Membership

        await database_sync_to_async(Membership.objects.filter(user=cast.viewer).delete)()
        await database_sync_to_async(Run.transition)(
            run.pk,
            to=RunStatus.PAUSED,
            from_=[RunStatus.QUEUED],
            event="run.paused",
            actor="test",
        )
        output = await viewer.receive_output(timeout=5)
        assert output["type"] == "websocket.close"

    run_async(test)


def test_publishing_is_throttled_per_run_but_never_drops_a_status_change(settings: Any) -> None:
    # The in-memory layer: with it, the publisher sends only while a consumer listens here.
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}

    async def test() -> None:
        layer = get_channel_layer()
        channel = await layer.new_channel()
        await layer.group_add(live.run_group("r1"), channel)
        publisher = live.Publisher()
        publisher.listening(asyncio.get_running_loop())

        def burst() -> None:
            for _ in range(50):
                publisher.submit("r1", 1, False)

        await asyncio.to_thread(burst)
        received = []
        loop = asyncio.get_running_loop()
        deadline = loop.time() + live.MIN_INTERVAL * 3
        while loop.time() < deadline:
            try:
                received.append(await asyncio.wait_for(layer.receive(channel), 0.05))
            except TimeoutError:
                pass
        # The first at once and one trailing push for the rest.
        assert len(received) == 2
        first, trailing = received
        assert first.keys() == {"type", "run_id", "change"}
        assert (first["type"], first["run_id"]) == ("run.changed", "r1")
        assert first["change"] != trailing["change"]  # each announcement is named apart
        await asyncio.to_thread(publisher.submit, "r1", 1, False)
        await asyncio.to_thread(publisher.submit, "r1", 1, True)  # a status change
        forced = await asyncio.wait_for(layer.receive(channel), 0.1)
        assert forced["run_id"] == "r1"
        publisher.stopped_listening()
        assert publisher.loop() is None  # nobody listens: nothing is sent

    run_async(test)


def test_a_crowd_watching_one_run_shares_one_render_per_change(
    team: Team, other_team: Team, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ten viewers (operators and a viewer) of one run: a change renders the partial once per
    right to operate it, not once per viewer, and every viewer gets the new state."""
    from runs import consumers

    cast = make_cast(team, other_team)
    run = start("t-wait", team=team, user=cast.owner)
    people = [cast.owner, cast.operator, cast.viewer] * 3 + [cast.owner]
    prepare_cookies(*people)
    calls: list[bool] = []
    real = consumers.render_run_live_as

    def counting(run_id: Any, *, may_operate: bool) -> str | None:
        calls.append(may_operate)
        return real(run_id, may_operate=may_operate)

    monkeypatch.setattr(consumers, "render_run_live_as", counting)

    async def test() -> None:
        crowd = []
        for person in people:
            viewer, connected = await connect(f"/ws/runs/{run.pk}/", person)
            assert connected
            await viewer.receive_from(timeout=5)
            crowd.append(viewer)
        calls.clear()
        await database_sync_to_async(Run.transition)(
            run.pk, to=RunStatus.PAUSED, from_=[RunStatus.QUEUED], event="run.paused", actor="t"
        )
        for viewer in crowd:
            await receive_until(viewer, lambda html: "badge-paused" in html)
        # One render for viewers and one for operators per change message (the transition
        # and its event may come as two messages): never one per viewer.
        assert set(calls) == {False, True} and len(calls) <= 4, calls

        # A crowd's copies of one change message arrive one after another (from Redis, one
        # by one): a copy arriving after the render for the first is done still shares it.
        layer = get_channel_layer()
        message = {"type": live.MESSAGE_TYPE, "run_id": str(run.pk), "change": "change-1"}
        for viewer in crowd:  # the pushes of the transition, to the last (a trailing one)
            while not await viewer.receive_nothing(timeout=live.MIN_INTERVAL * 3):
                await viewer.receive_from()
        for expected_renders in (2, 0, 2):
            calls.clear()
            await layer.group_send(live.run_group(run.pk), message)
            for viewer in crowd:
                assert "badge-paused" in await viewer.receive_from(timeout=5)
            for viewer in crowd:
                assert await viewer.receive_nothing(timeout=0.05)
            assert len(calls) == expected_renders, calls
            message = {**message, "change": "change-2"} if expected_renders == 0 else message
        for viewer in crowd:
            await viewer.disconnect()

    run_async(test)


def test_arrivals_give_every_copy_of_a_change_its_first_arrival() -> None:
    from runs.consumers import Arrivals

    async def test() -> None:
        arrivals = Arrivals()
        first = arrivals.since({"change": "a"})
        await asyncio.sleep(0.01)
        assert arrivals.since({"change": "a"}) == first
        later = arrivals.since({"change": "b"})
        assert later > first
        assert arrivals.since({}) >= later  # no name: now
        for i in range(Arrivals.MAX + 1):
            arrivals.since({"change": f"x{i}"})
        assert len(arrivals._first) <= Arrivals.MAX

    run_async(test)


def test_one_hub_per_process_joins_a_runs_group_and_leaves_with_its_last_viewer(
    team: Team, other_team: Team
) -> None:
    """Viewers of a run in one process share one member of the run's group (the hub's
    channel); the hub leaves the group with the last of them and joins again for the next."""
    from runs.consumers import hub_for

    cast = make_cast(team, other_team)
    run = start("t-wait", team=team, user=cast.owner)
    prepare_cookies(cast.owner, cast.viewer)
    group = live.run_group(run.pk)

    async def members(layer: Any) -> set[str]:
        if hasattr(layer, "groups"):  # the in-memory layer
            return set(layer.groups.get(group, {}))
        key = layer._group_key(group)  # channels_redis keeps a group as a sorted set
        conn = layer.connection(layer.consistent_hash(group))
        return {m.decode() for m in await conn.zrange(key, 0, -1)}

    async def test() -> None:
        layer = get_channel_layer()
        first, ok = await connect(f"/ws/runs/{run.pk}/", cast.owner)
        assert ok
        await first.receive_from(timeout=5)
        second, ok = await connect(f"/ws/runs/{run.pk}/", cast.viewer)
        assert ok
        await second.receive_from(timeout=5)
        hub = hub_for(layer)
        assert len(hub.viewers[str(run.pk)]) == 2
        assert await members(layer) == {hub.channel}
        await first.disconnect()
        assert await members(layer) == {hub.channel}
        await second.disconnect()
        assert await members(layer) == set() and hub.channel is None
        third, ok = await connect(f"/ws/runs/{run.pk}/", cast.viewer)
        assert ok
        await third.receive_from(timeout=5)
        assert await members(layer) == {hub.channel}
        await database_sync_to_async(Run.transition)(
            run.pk, to=RunStatus.PAUSED, from_=[RunStatus.QUEUED], event="run.paused", actor="t"
        )
        await receive_until(third, lambda html: "badge-paused" in html)
        await third.disconnect()

    run_async(test)


class QueueLayer:
    """A channel layer of one channel, fed by the test through ``inbox``: for the hub's own
    scheduling, apart from any real layer's timing."""

    def __init__(self) -> None:
        self.inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

    async def new_channel(self) -> str:
        return "hub-channel"

    async def group_add(self, group: str, channel: str) -> None:
        pass

    async def group_discard(self, group: str, channel: str) -> None:
        pass

    async def receive(self, channel: str) -> dict[str, Any]:
        return await self.inbox.get()


def test_changes_arriving_during_a_hand_over_make_one_more_of_the_latest() -> None:
    """A hub hands changes of a run over one at a time: five changes arriving while the
    first is handed over make one more hand-over, of the latest, not five."""
    from runs.consumers import RunHub, arrivals

    class Viewer:
        run_id = "r1"

        def __init__(self, person_id: int) -> None:
            self.person_id = person_id
            self.rendered: list[float] = []
            self.sent: list[str] = []

        async def render_for(self, since: float) -> str:
            self.rendered.append(since)
            await asyncio.sleep(0.05)
            return f"since {since}"

        def sent_now(self, html: str | None) -> bool:
            return False  # no server's direct send here: the hub awaits ``deliver``

        async def deliver(self, html: str | None) -> None:
            assert html is not None
            self.sent.append(html)

    async def test() -> None:
        layer = QueueLayer()
        hub = RunHub(layer, asyncio.get_running_loop())
        ann, bob, ann_again = Viewer(1), Viewer(2), Viewer(1)
        for viewer in (ann, bob, ann_again):
            await hub.watch("r1", viewer)  # type: ignore[arg-type]

        def change(i: int) -> dict[str, Any]:
            return {"type": live.MESSAGE_TYPE, "run_id": "r1", "change": f"c{i}"}

        await layer.inbox.put(change(0))
        await asyncio.sleep(0.01)  # the first hand-over is rendering
        for i in range(1, 6):
            await layer.inbox.put(change(i))
            await asyncio.sleep(0.001)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 5
        while (hub._handing or len(bob.sent) < 2) and loop.time() < deadline:
            await asyncio.sleep(0.01)
        latest = arrivals.since(change(5))
        assert len(bob.sent) == 2 and bob.rendered[-1] == latest
        # One render per person per hand-over: ann's second socket gets ann's render.
        assert ann_again.rendered == [] and ann_again.sent == ann.sent
        hub._stop_reading()

    run_async(test)


def test_a_run_socket_whose_connect_fails_leaves_nothing_behind(
    team: Team, other_team: Team, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Channels calls no ``disconnect`` for a connect that raised: the consumer undoes its
    own registration, or the hub would keep pushing to a socket that is gone."""
    from runs import consumers

    cast = make_cast(team, other_team)
    run = start("t-wait", team=team, user=cast.owner)
    prepare_cookies(cast.owner)

    def broken(user_id: int, run_id: Any) -> None:
        raise RuntimeError("presence is down")

    monkeypatch.setattr(consumers.presence, "joined", broken)

    async def test() -> None:
        layer = get_channel_layer()
        viewer, _ = await connect(f"/ws/runs/{run.pk}/", cast.owner)
        with pytest.raises(RuntimeError, match="presence is down"):
            await viewer.wait(timeout=5)
        hub = consumers.hub_for(layer)
        assert str(run.pk) not in hub.viewers and hub.channel is None
        assert cast.owner.pk not in consumers.watchers.of(team.pk)

    run_async(test)


def test_a_cancelled_receive_on_the_configured_layer_always_ends() -> None:
    """The hub stops reading by cancelling its receive. A receive that outlived its
    cancellation would poll the channel layer for ever (and hang the process's shutdown):
    cancelled at every moment of its life, each one ends."""

    async def test() -> None:
        layer = get_channel_layer()
        channel = await layer.new_channel()
        loop = asyncio.get_running_loop()
        survivors = 0
        for i in range(300):
            task = loop.create_task(layer.receive(channel))
            for _ in range(i % 12):  # cancel after 0..11 turns of the loop
                await asyncio.sleep(0)
            task.cancel()
            done, _ = await asyncio.wait([task], timeout=3)
            if not done:
                survivors += 1
                task.cancel()
        assert survivors == 0

    run_async(test)


def test_a_hub_reader_that_outlives_its_cancellation_stops_at_its_next_message() -> None:
    """Even if a layer swallowed the cancellation, a reader of a hub that stopped reading
    ends at the next message it gets instead of handing it to nobody for ever."""
    from runs.consumers import RunHub

    class Layer(QueueLayer):
        async def receive(self, channel: str) -> dict[str, Any]:
            while True:
                try:
                    return await self.inbox.get()
                except asyncio.CancelledError:
                    continue  # the lost cancellation

    async def test() -> None:
        layer = Layer()
        hub = RunHub(layer, asyncio.get_running_loop())
        viewer = object()
        await hub.watch("r1", viewer)  # type: ignore[arg-type]
        reader = hub._reader
        assert reader is not None
        await asyncio.sleep(0.01)  # the reader waits in the layer's receive
        await hub.unwatch("r1", viewer)  # type: ignore[arg-type]
        await asyncio.sleep(0.01)
        assert not reader.done()  # the layer kept it reading
        await layer.inbox.put({"type": live.MESSAGE_TYPE, "run_id": "r1", "change": "c"})
        done, _ = await asyncio.wait([reader], timeout=5)
        assert done

    run_async(test)


def test_list_sockets_of_people_alike_share_one_render_per_change(
    team: Team, other_team: Team, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The runs list depends on the person only through their teams and roles: the owner
    and the lead (both operators of the team) with the same filters share a render; the
    viewer, with another role, gets one of their own; every socket shows the change."""
    from runs import consumers

    cast = make_cast(team, other_team)
    people = [cast.owner, cast.operator, cast.owner, cast.viewer]
    prepare_cookies(*people)
    calls: list[str] = []
    real = consumers.render_run_list

    def counting(user: Any, query_string: str, **kw: Any) -> str:
        calls.append(user.username)
        return real(user, query_string, **kw)

    monkeypatch.setattr(consumers, "render_run_list", counting)

    async def test() -> None:
        sockets = []
        for person in people:
            socket, connected = await connect("/ws/runs/?workflow=t-noop", person)
            assert connected
            await socket.receive_from(timeout=5)
            sockets.append(socket)
        calls.clear()
        run = await database_sync_to_async(start)("t-noop", team=team, user=cast.owner)
        await database_sync_to_async(run.pause)(actor="user:owner")
        for socket in sockets:
            await receive_until(socket, lambda html: str(run.pk) in html and "badge-paused" in html)
        # Per change message: one render for the operators, one for the viewer (the start
        # and the pause may come as separate messages): never one per socket.
        operators = [c for c in calls if c != cast.viewer.username]
        viewers = [c for c in calls if c == cast.viewer.username]
        assert 1 <= len(viewers) <= 2 and 1 <= len(operators) <= 2, calls
        for socket in sockets:
            await socket.disconnect()

    run_async(test)


def test_a_change_arriving_while_a_push_reads_gets_a_push_of_its_own() -> None:
    """A push that already started may have read before the change was committed: the
    change must not wait for some later one to be shown."""
    from runs.consumers import LiveConsumer

    class Probe(LiveConsumer):
        push_interval = 0.05

        def __init__(self) -> None:
            self.reset_live()
            self.pushes = self.active = self.most = 0
            self.reading = asyncio.Event()
            self.release = asyncio.Event()

        async def push(self) -> None:
            self.pushes += 1
            self.active += 1
            self.most = max(self.most, self.active)
            if self.pushes == 1:
                self.reading.set()
                await self.release.wait()
            self.active -= 1

    async def test() -> None:
        probe = Probe()
        probe.schedule_push()
        await asyncio.wait_for(probe.reading.wait(), 5)
        probe.schedule_push()  # arrives while the first push reads
        await asyncio.sleep(probe.push_interval * 3)  # the push outlasts the interval
        probe.schedule_push()  # and another: both are shown by the one push that follows
        assert probe.pushes == 1  # never two at once on a socket
        probe.release.set()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 5
        while probe.pushes < 2 and loop.time() < deadline:
            await asyncio.sleep(0.01)
        await asyncio.sleep(probe.push_interval * 3)
        assert probe.pushes == 2 and probe.most == 1

    run_async(test)


def test_shared_renders_forget_finished_ones_once_there_are_many() -> None:
    """Renders are kept for the copies of a change arriving moments apart, not for ever:
    past ``MAX`` entries, the finished ones older than ``KEEP`` go; running ones stay."""
    from runs.consumers import SharedRenders

    async def test() -> None:
        renders = SharedRenders()
        renders.KEEP = 0.0
        loop = asyncio.get_running_loop()
        for i in range(renders.MAX + 1):
            assert await renders.get(("k", i), loop.time(), lambda i=i: f"render {i}") == (
                f"render {i}"
            )
        # A render still running (renders run one at a time on the database thread, so
        # one is stood in for here), however old, is kept for those waiting on it.
        running = loop.create_task(asyncio.Event().wait())
        renders._entries["slow"] = (loop.time() - 60, running)
        assert await renders.get("new", loop.time(), lambda: "new") == "new"
        assert set(renders._entries) == {"slow", "new"}
        running.cancel()
        # Finished renders younger than ``KEEP`` stay: a late copy of a change shares them.
        fresh = SharedRenders()
        for i in range(fresh.MAX + 2):
            await fresh.get(("k", i), loop.time(), lambda: "render")
        assert len(fresh._entries) == fresh.MAX + 2

    run_async(test)

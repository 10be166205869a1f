"""WebSocket consumers of the console: one per run page, one per runs list.

Both are authenticated by the session (``AuthMiddlewareStack``; the origin is checked by
``AllowedHostsOriginValidator``) and check, when connecting and again before every push, that
the user may see what they watch; otherwise the socket is closed. They send rendered HTML
partials whose root carries ``hx-swap-oob``, which htmx's ws extension swaps by DOM id.

A group message says only which run changed (see ``runs.live``); the consumer re-reads and
renders it for its own user. On connect each sends the current partial at once, so a change
between the page's render and the socket's opening is not missed. A run page's socket also
counts its person as watching the run (``notifications.presence``) while it is open.

A crowd watching one run costs one render per change, not one per viewer: the run's partial
depends on the viewer only through the right to operate it, so viewers share a render
(``SharedRenders``) that started after their change message first arrived in the process (it
therefore shows that change; ``Arrivals``). Likewise the right of each viewer to see and
operate the run is read after every change, by one query for all the team's viewers in the
process (``rights``). The runs list likewise: it depends on the person only through their
teams and roles, so people alike watching the same filters share the table's render.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer

from agentops.wsframes import direct_send
from notifications import presence
from runs import live
from runs.console import render_run_list
from runs.models import Run
from runs.permissions import OPERATE, VIEW, TeamRole, team_roles
from runs.run_page import render_run_live_as

log = logging.getLogger(__name__)

#: A list re-renders at most this often, however many of its runs change.
LIST_INTERVAL = 1.0
#: The close code of a socket whose session was signed out of (4000-4999: the application's).
SIGNED_OUT = 4401


def _user(scope: dict[str, Any]) -> Any:
    return scope.get("user")


class LiveConsumer(AsyncWebsocketConsumer):
    """What every console socket shares: the groups it joined (left on disconnect), telling
    ``runs.live`` that someone listens in this process, and throttled pushes (``schedule_push``
    pushes at most once every ``push_interval`` seconds; a push already due shows the later
    changes too). Subclasses implement ``push``."""

    push_interval = 1.0
    groups_joined: list[str]

    def reset_live(self) -> None:
        self.groups_joined = []
        self.followed: set[str] = set()
        self._due: asyncio.Task[None] | None = None
        self._pushing: asyncio.Task[None] | None = None
        self._again = False
        self._last = 0.0
        self._listening = False

    async def join(self, *groups: str) -> None:
        for group in groups:
            if group not in self.groups_joined:
                await self.channel_layer.group_add(group, self.channel_name)
                self.groups_joined.append(group)
        self.listen()

    async def accept(self, subprotocol: str | None = None, headers: Any = None) -> None:
        # Signing out of the session closes the socket (``runs.live.end_session_sockets``).
        # Joined first: a sign-out while the socket opens is heard once it is open.
        session = self.scope.get("session")
        if group := await database_sync_to_async(live.session_group_of)(session):
            await self.join(group)
        await super().accept(subprotocol, headers)
        self._rejoining = asyncio.get_running_loop().create_task(self._rejoin_every())

    #: The channel layer forgets a group's member after a day (channels_redis's
    #: ``group_expiry``); a socket open longer joins its groups again well before, and checks
    #: that its session has not expired meanwhile (a sign-out closes it at once).
    REJOIN_EVERY = 3600.0

    async def _rejoin_every(self) -> None:
        while True:
            await asyncio.sleep(self.REJOIN_EVERY)
            if not await database_sync_to_async(_still_signed_in)(self.scope):
                await self.close(code=SIGNED_OUT)
                return
            for group in list(self.groups_joined):
                await self.channel_layer.group_add(group, self.channel_name)

    async def session_ended(self, event: dict[str, Any]) -> None:
        await self.close(code=SIGNED_OUT)

    def listen(self) -> None:
        if not self._listening:
            # With the in-memory layer, pushes are sent only while someone here listens.
            live.publisher.listening(asyncio.get_running_loop())
            self._listening = True

    async def follow(self, wanted: set[str]) -> None:
        """Listen to exactly the groups ``wanted`` of those that follow what the person may
        see (their teams' groups): joined now, or left once no longer wanted. The other
        groups the socket joined (its session's) stay."""
        await self.join(*sorted(wanted - self.followed))
        await self.leave(*sorted(self.followed - wanted))
        self.followed = set(wanted)

    async def leave(self, *groups: str) -> None:
        for group in groups:
            if group in self.groups_joined:
                await self.channel_layer.group_discard(group, self.channel_name)
                self.groups_joined.remove(group)

    async def disconnect(self, code: int) -> None:
        self._again = False
        for task in (
            getattr(self, "_due", None),
            getattr(self, "_pushing", None),
            getattr(self, "_rejoining", None),
        ):
            if task is not None and task is not asyncio.current_task():
                task.cancel()
        await self.leave(*getattr(self, "groups_joined", []))
        if getattr(self, "_listening", False):
            live.publisher.stopped_listening()
            self._listening = False

    def schedule_push(self) -> None:
        if self._due is not None and not self._due.done():
            return  # a push is due and has not started: it will show this change too
        if self._pushing is not None:
            # One has started and may have read before this change was committed: one
            # more follows it (never two at once on a socket).
            self._again = True
            return
        loop = asyncio.get_running_loop()
        delay = max(0.0, self._last + self.push_interval - loop.time())
        self._due = loop.create_task(self._push_after(delay))

    async def _push_after(self, delay: float) -> None:
        if delay:
            await asyncio.sleep(delay)
        self._due, self._pushing = None, asyncio.current_task()
        self._last = asyncio.get_running_loop().time()
        try:
            await self.push()
        finally:
            self._pushing = None
            task = asyncio.current_task()
            if self._again and task is not None and not task.cancelling():
                self._again = False
                self.schedule_push()  # one interval after this one started

    async def push(self) -> None:
        raise NotImplementedError


class Watchers:
    """Who watches runs of which team in this process, so that one query answers, after a
    change, whether each of them may still see and operate it (touched only on the loop)."""

    def __init__(self) -> None:
        self._teams: dict[int, dict[int, int]] = {}

    def add(self, team_id: int, user_id: int) -> None:
        users = self._teams.setdefault(team_id, {})
        users[user_id] = users.get(user_id, 0) + 1

    def remove(self, team_id: int, user_id: int) -> None:
        users = self._teams.get(team_id, {})
        if users.get(user_id, 0) <= 1:
            users.pop(user_id, None)
        else:
            users[user_id] -= 1

    def of(self, team_id: int) -> list[int]:
        return sorted(self._teams.get(team_id, {}))


def _rights(team_id: int, user_ids: list[int]) -> dict[int, tuple[bool, bool]]:
    """Each user's right to see and to operate the team's runs, in two queries."""
    from django.contrib.auth import get_user_model

    from runs.models import Membership
    from runs.permissions import ROLE_PERMISSIONS

    users = get_user_model().objects.filter(pk__in=user_ids, is_active=True)
    supers = set(users.filter(is_superuser=True).values_list("pk", flat=True))
    roles = dict(
        Membership.objects.filter(team_id=team_id, user__in=users).values_list("user_id", "role")
    )
    out: dict[int, tuple[bool, bool]] = {}
    for uid in user_ids:
        if uid in supers:
            out[uid] = (True, True)
        else:
            perms = ROLE_PERMISSIONS.get(roles.get(uid, ""), frozenset())
            out[uid] = (VIEW in perms, OPERATE in perms)
    return out


class SharedRenders:
    """Renders shared by the consumers of one process: ``get`` returns a render of ``key``
    that started at or after ``since`` (loop time), starting one if there is none."""

    #: Past this many entries, finished renders older than ``KEEP`` seconds are dropped (a
    #: render is shared with the copies of a change arriving within moments of each other).
    MAX = 256
    KEEP = 10.0

    def __init__(self) -> None:
        self._entries: dict[Any, tuple[float, asyncio.Task[Any]]] = {}

    async def get(self, key: Any, since: float, render: Callable[[], Any]) -> Any:
        loop = asyncio.get_running_loop()
        entry = self._entries.get(key)
        if entry is None or entry[0] < since:
            if len(self._entries) > self.MAX:
                old = loop.time() - self.KEEP
                self._entries = {
                    k: e for k, e in self._entries.items() if e[0] >= old or not e[1].done()
                }
            # A task, not a bare await: a viewer that disconnects mid-render must not leave
            # the others waiting on a render nobody finishes.
            entry = (loop.time(), loop.create_task(database_sync_to_async(render)()))
            self._entries[key] = entry
        return await asyncio.shield(entry[1])


class Arrivals:
    """When each change message first arrived in this process (loop time). The messages of
    one change reach a crowd of consumers one after another; a render started after the
    first arrival shows the change, so all of them may share it (touched only on the loop)."""

    MAX = 10_000

    def __init__(self) -> None:
        self._first: dict[str, float] = {}

    def since(self, event: dict[str, Any]) -> float:
        now = asyncio.get_running_loop().time()
        change = event.get("change")
        if not isinstance(change, str):
            return now
        first = self._first.setdefault(change, now)
        if len(self._first) > self.MAX:  # oldest first: dicts keep their insertion order
            for key in list(self._first)[: self.MAX // 2]:
                del self._first[key]
        return first


watchers = Watchers()
renders = SharedRenders()
arrivals = Arrivals()


class RunHub:
    """The run pages' one listener in this process (per event loop and channel layer): one
    channel of its own joins the group of each run watched here, and each change message,
    received once, is handed to every viewer of that run in the process.

    With a channel per viewer, a crowd of 1,000 cost 1,000 channel-layer messages per change,
    each stored, read and dispatched apart (plus the consumer's own bookkeeping per message);
    now it costs one, and each viewer one WebSocket send of the shared render.

    If the hub's channel fails (the Redis went away), its viewers are closed, as their own
    channels' failure closed them before: their pages reconnect, or poll until they can."""

    #: channels_redis forgets a group member after a day (``group_expiry``); re-join well
    #: before, whenever a viewer arrives later than this after the last join.
    REJOIN_AFTER = 3600.0

    def __init__(self, layer: Any, loop: asyncio.AbstractEventLoop) -> None:
        self.layer, self.loop = layer, loop
        self.channel: str | None = None
        self.viewers: dict[str, dict[RunConsumer, None]] = {}  # ordered sets, by run
        self._joined_at: dict[str, float] = {}
        self._reader: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[None]] = set()
        self._due: dict[str, float] = {}  # run -> the latest change not yet handed over
        self._handing: set[str] = set()

    async def watch(self, run_id: str, viewer: RunConsumer) -> None:
        async with self._lock:
            if self.channel is None:
                self.channel = await self.layer.new_channel()
                self._reader = self.loop.create_task(self._read(self.channel))
            self.viewers.setdefault(run_id, {})[viewer] = None
            now = self.loop.time()
            if now - self._joined_at.get(run_id, -self.REJOIN_AFTER) >= self.REJOIN_AFTER:
                await self.layer.group_add(live.run_group(run_id), self.channel)
                self._joined_at[run_id] = now

    async def unwatch(self, run_id: str, viewer: RunConsumer) -> None:
        async with self._lock:
            viewers = self.viewers.get(run_id)
            if viewers is None or viewers.pop(viewer, False) is False or viewers:
                return
            del self.viewers[run_id]
            self._joined_at.pop(run_id, None)
            if self.channel is not None:
                await self.layer.group_discard(live.run_group(run_id), self.channel)
            if not self.viewers:  # nobody watches here: stop reading until someone does
                self._stop_reading()

    def _stop_reading(self) -> None:
        if self._reader is not None and self._reader is not asyncio.current_task():
            self._reader.cancel()
        self._reader, self.channel = None, None
        self._joined_at.clear()

    async def _read(self, channel: str) -> None:
        while True:
            try:
                message = await self.layer.receive(channel)
            except asyncio.CancelledError:
                raise
            except Exception:
                if self.channel != channel:
                    return  # a reader that outlived its cancellation: not the hub's own
                log.warning("live updates of run pages stopped", exc_info=True)
                await self._fail()
                return
            if self.channel != channel:
                return  # stopped reading, and the cancellation was lost on the way
            if message.get("type") != live.MESSAGE_TYPE:
                continue
            run_id = str(message.get("run_id"))
            if run_id not in self.viewers:
                continue
            # At most one hand-over per run at a time; changes arriving meanwhile make one
            # more, of the latest of them, when it ends.
            since = arrivals.since(message)
            self._due[run_id] = max(since, self._due.get(run_id, since))
            if run_id not in self._handing:
                self._handing.add(run_id)
                task = self.loop.create_task(self._hand_overs(run_id))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

    async def _hand_overs(self, run_id: str) -> None:
        try:
            while run_id in self._due:
                since = self._due.pop(run_id)
                await self._hand_over(list(self.viewers.get(run_id, ())), since)
        finally:
            self._handing.discard(run_id)

    #: Sends between two turns of the event loop: a hand-over to a crowd lets the process's
    #: other sockets be served meanwhile (under daphne each frame is written as it is sent,
    #: ``agentops.wsframes``; a server that queues its writes sends them on the turn).
    SENDS_PER_TURN = 100
    #: A hand-over running longer than this (seconds) reads rights and renders again.
    REREAD_AFTER = 0.5

    async def _hand_over(self, viewers: list[RunConsumer], since: float) -> None:
        # One after another: the first viewer of each person reads the rights and the render
        # (shared, ``SharedRenders``); everyone else is only sent what their person sees.
        seen: dict[int, str | None] = {}
        started = self.loop.time()
        for i, viewer in enumerate(viewers, 1):
            if self.loop.time() - started > self.REREAD_AFTER:
                # A long hand-over reads the rights (and the run) again for the rest, so a
                # right taken away meanwhile is not used for long.
                started = since = self.loop.time()
                seen.clear()
            try:
                person = viewer.person_id
                if person not in seen:
                    seen[person] = await viewer.render_for(since)
                if not viewer.sent_now(seen[person]):
                    await viewer.deliver(seen[person])
            except Exception:  # one broken socket must not cost the others their update
                log.warning("live update of run %s not pushed", viewer.run_id, exc_info=True)
            if i % self.SENDS_PER_TURN == 0:
                await asyncio.sleep(0)

    async def _fail(self) -> None:
        async with self._lock:
            viewers = [v for group in self.viewers.values() for v in group]
            self.viewers.clear()
            self._stop_reading()
        for viewer in viewers:
            with contextlib.suppress(Exception):
                await viewer.close()


_hubs: dict[tuple[int, int], RunHub] = {}


def hub_for(layer: Any) -> RunHub:
    """This event loop's hub for ``layer`` (a Redis layer's connections belong to a loop)."""
    loop = asyncio.get_running_loop()
    key = (id(loop), id(layer))
    hub = _hubs.get(key)
    if hub is None or hub.loop is not loop or hub.layer is not layer:
        for stale in [k for k, h in _hubs.items() if h.loop.is_closed()]:
            del _hubs[stale]
        hub = _hubs[key] = RunHub(layer, loop)
    return hub


async def rights(user: Any, team_id: int, since: float) -> tuple[bool, bool]:
    """``user``'s right to see and operate ``team_id``'s runs, read after ``since``: one query
    for every watcher of the team in this process."""
    ids = watchers.of(team_id)
    if user.pk not in ids:
        ids = sorted({*ids, user.pk})
    found = await renders.get(("rights", team_id), since, lambda: _rights(team_id, ids))
    if user.pk not in found:  # joined after that query started: ask for itself
        found = await database_sync_to_async(_rights)(team_id, [user.pk])
    return found[user.pk]


def _team_of(run_id: Any) -> int | None:
    return Run.objects.filter(pk=run_id).values_list("team_id", flat=True).first()


def _still_signed_in(scope: dict[str, Any]) -> bool:
    """Whether the socket's session still exists, unexpired, for the same person (read from
    the database: the scope holds the session as it was at connect)."""
    from importlib import import_module

    from django.conf import settings
    from django.contrib.auth import SESSION_KEY

    session, user = scope.get("session"), scope.get("user")
    key = getattr(session, "session_key", None)
    if not key or not getattr(user, "is_authenticated", False):
        return False
    fresh = import_module(settings.SESSION_ENGINE).SessionStore(key)
    return fresh.load().get(SESSION_KEY) == str(user.pk)


def active_user(user_id: int) -> Any:
    """The person, read afresh (None once deactivated or deleted): a socket's user was read
    when it opened, and may since have lost what it was allowed then."""
    from django.contrib.auth import get_user_model

    return get_user_model().objects.filter(pk=user_id, is_active=True).first()


def _list_audience(user_id: int) -> tuple[Any, Any, list[TeamRole]] | None:
    """What the runs list shows a person depends on: whether they are a superuser and their
    teams with their roles (None when they may see no team's runs, or are no longer active).
    The person is read afresh, as their roles are: the one the socket was opened with may
    since have been deactivated or have lost superuser. People alike see the same table for
    the same filters, so they share its render, which is made from these very roles (read
    once: a membership changing meanwhile cannot slip into the share). Returns the key of
    the share, the person and their roles."""
    user = active_user(user_id)
    if user is None:
        return None
    roles = team_roles(user)
    if not any(t.holds(VIEW) for t in roles):
        return None
    return (bool(user.is_superuser), tuple((t.id, t.role) for t in roles)), user, roles


class RunConsumer(LiveConsumer):
    """Pushes ``#run-live`` of one run whenever it changes."""

    async def connect(self) -> None:
        self.reset_live()
        self.present_as: int | None = None
        self.watching = False
        self.run_id = self.scope["url_route"]["kwargs"]["run_id"]
        self._direct = direct_send(self.scope)
        user = _user(self.scope)
        self.team_id = None
        if getattr(user, "is_authenticated", False):
            self.team_id = await database_sync_to_async(_team_of)(self.run_id)
        now = asyncio.get_running_loop().time()
        if self.team_id is None or not (await rights(user, self.team_id, now))[0]:
            await self.close()
            return
        watchers.add(self.team_id, user.pk)
        self.person_id: int = user.pk
        self.watching = True
        self.run_id = str(self.run_id)
        try:
            await self.accept()
            # After accepting (the hub may push at once); the first push below follows it,
            # so a change in between is shown.
            await hub_for(self.channel_layer).watch(self.run_id, self)
            self.listen()
            # Someone watching the run in an open page gets no email about it meanwhile.
            await database_sync_to_async(presence.joined)(user.pk, self.run_id)
            self.present_as = user.pk
            await self.push()
        except BaseException:
            # Channels does not call ``disconnect`` for a connect that failed: without this
            # the hub would keep handing changes to a socket that is gone.
            with contextlib.suppress(Exception):
                await self.disconnect(1011)
            raise

    async def disconnect(self, code: int) -> None:
        await super().disconnect(code)
        if getattr(self, "watching", False):
            self.watching = False
            watchers.remove(self.team_id, self.person_id)
            await hub_for(self.channel_layer).unwatch(self.run_id, self)
        if getattr(self, "present_as", None) is not None:
            await database_sync_to_async(presence.left)(self.present_as, self.run_id)
            self.present_as = None

    async def push(self, *, since: float | None = None) -> None:
        since = asyncio.get_running_loop().time() if since is None else since
        await self.deliver(await self.render_for(since))

    async def render_for(self, since: float) -> str | None:
        """The run's partial as this viewer may see it, from a render started after
        ``since``; None when they may no longer see it (or the run is gone)."""
        may_view, may_operate = await rights(_user(self.scope), self.team_id, since)
        if not may_view:
            return None
        run_id = self.run_id
        return await renders.get(
            ("run", run_id, may_operate),
            since,
            lambda: render_run_live_as(run_id, may_operate=may_operate),
        )

    def sent_now(self, html: str | None) -> bool:
        """Sent ``html`` straight to the socket (under daphne, ``agentops.wsframes``), without
        the ASGI send's layers: a crowd's hand-over tries this per viewer first. False:
        nothing was sent, ``deliver`` it."""
        return html is not None and self._direct is not None and self._direct(html)

    async def deliver(self, html: str | None) -> None:
        """Send ``html`` the ordinary way (None: access was taken away, or the run is gone,
        so stop watching)."""
        if html is None:
            await self.close()
            return
        await self.base_send({"type": "websocket.send", "text": html})


class RunListConsumer(LiveConsumer):
    """Pushes ``#runs-table`` (with the filters of the socket's query string) when runs of
    the user's teams change, at most once every ``LIST_INTERVAL`` seconds."""

    push_interval = LIST_INTERVAL

    async def connect(self) -> None:
        self.reset_live()
        user = _user(self.scope)
        if not getattr(user, "is_authenticated", False):
            await self.close()
            return
        self.user_id: int = user.pk
        audience = await database_sync_to_async(_list_audience)(user.pk)
        if audience is None:
            await self.close()
            return
        self.query = self.scope.get("query_string", b"").decode("latin-1")
        self._since: float | None = None
        await self._follow(audience[2])
        await self.accept()
        await self.push()

    async def _follow(self, roles: list[TeamRole]) -> None:
        """Listen to the teams the person may see now: one they joined since is heard, one
        they left is not."""
        await self.follow({live.team_group(t.id) for t in roles if t.holds(VIEW)})

    async def run_changed(self, event: dict[str, Any]) -> None:
        # The push must show this change: a render started after its first arrival here does.
        since = arrivals.since(event)
        self._since = since if self._since is None else max(self._since, since)
        self.schedule_push()

    async def push(self) -> None:
        loop = asyncio.get_running_loop()
        since = loop.time() if self._since is None else self._since
        self._since = None
        audience = await database_sync_to_async(_list_audience)(self.user_id)
        if audience is None:
            await self.close()
            return
        key, user, roles = audience
        await self._follow(roles)
        query = self.query
        html = await renders.get(
            ("list", key, query), since, lambda: render_run_list(user, query, teams=roles)
        )
        await self.send(text_data=html)

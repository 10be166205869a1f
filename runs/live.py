"""Live updates of the console: "run X changed", pushed to whoever watches it.

Like the doorbell, a message carries only the run's id: each WebSocket consumer re-reads the
run and renders it for its own user, so a push never shows what its receiver may not see and
a lost push loses nothing (the next one, or the page's polling fallback, shows the truth).

The cost on the engine's hot path is one ``transaction.on_commit`` registration (a rolled-back
change is never announced) and, at commit, one thread-safe ``call_soon`` onto an event loop;
throttling and the channel-layer I/O happen on that loop, never in the writer's thread:

- with the in-memory layer (the embedded default) only consumers of this process can listen,
  so the loop is theirs and nothing is sent while none is connected;
- with a cross-process layer (Redis) a private loop in a daemon thread sends, since a consumer
  may be listening in any process.

A run is announced at most every ``MIN_INTERVAL`` seconds (a trailing send carries the last
change); a status change is always sent at once.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import threading
import uuid
from functools import partial
from typing import Any

from django.db import transaction

log = logging.getLogger(__name__)

#: At most this often per run (about five a second).
MIN_INTERVAL = 0.2
MESSAGE_TYPE = "run.changed"


def run_group(run_id: Any) -> str:
    return f"run-{run_id}"


def team_group(team_id: Any) -> str:
    return f"runs-team-{team_id}"


#: The sign-in's own id in its session's data: unlike the session key it survives
#: ``cycle_key`` (a password change keeps the person signed in under a new key).
SIGN_IN_ID = "_agentops_sign_in"
SESSION_ENDED = "session.ended"


def session_group_of(session: Any) -> str | None:
    """The group of every console socket opened with one sign-in. Named by a digest: the
    id is a credential's kin, and group names are stored in the channel layer (Redis). A
    session signed in before sign-ins had ids goes by its key."""
    if session is None:
        return None
    ident = session.get(SIGN_IN_ID) or getattr(session, "session_key", None)
    if not ident:
        return None
    return f"session-{hashlib.sha256(str(ident).encode()).hexdigest()[:40]}"


def name_sign_in(sender: Any, request: Any = None, **kwargs: Any) -> None:
    """``user_logged_in``: give the sign-in its id (see ``SIGN_IN_ID``)."""
    session = getattr(request, "session", None)
    if session is not None:
        session[SIGN_IN_ID] = uuid.uuid4().hex


def end_session_sockets(sender: Any, request: Any = None, **kwargs: Any) -> None:
    """``user_logged_out``: close the sockets opened with the sign-in being ended, in every
    process (a page left open would otherwise go on receiving pushes)."""
    if group := session_group_of(getattr(request, "session", None)):
        publish_group(group, {"type": SESSION_ENDED})


def _in_memory_layer() -> bool:
    from channels.layers import InMemoryChannelLayer, get_channel_layer

    return isinstance(get_channel_layer(), InMemoryChannelLayer)


class Publisher:
    """Process-wide state of the pushes. Throttle state is touched only on the send loop."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._listener_loop: asyncio.AbstractEventLoop | None = None
        self._listeners = 0
        self._own_loop: asyncio.AbstractEventLoop | None = None
        self._own_pid = 0
        self._memory: bool | None = None
        self._last: dict[str, float] = {}
        self._pending: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._team_ids: dict[str, int] = {}

    # --- consumers of this process say where they listen ---------------------------------
    def listening(self, loop: asyncio.AbstractEventLoop) -> None:
        with self._lock:
            if self._listener_loop is not loop:
                self._listener_loop, self._listeners = loop, 0
                self._last.clear()
                self._pending.clear()
            self._listeners += 1

    def stopped_listening(self) -> None:
        with self._lock:
            self._listeners = max(0, self._listeners - 1)
            if not self._listeners:
                self._listener_loop = None

    # --- which loop sends ------------------------------------------------------------------
    def loop(self) -> asyncio.AbstractEventLoop | None:
        """The loop that sends, or None when nobody could be listening."""
        if self._memory is None:
            self._memory = _in_memory_layer()
        if self._memory:
            loop = self._listener_loop
            if loop is None or loop.is_closed():
                return None
            return loop
        return self._private_loop()

    def _private_loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            # A forked worker process inherits the object but not the thread: start anew.
            if self._own_loop is None or self._own_pid != os.getpid():
                loop = asyncio.new_event_loop()
                thread = threading.Thread(
                    target=loop.run_forever, name="agentops-live", daemon=True
                )
                thread.start()
                self._own_loop, self._own_pid = loop, os.getpid()
                self._last.clear()
                self._pending.clear()
            return self._own_loop

    # --- from any thread ---------------------------------------------------------------------
    def submit(self, run_id: str, team_id: int | None, force: bool) -> None:
        loop = self.loop()
        if loop is None:
            return
        if team_id is None:
            team_id = self._team_of(run_id)
            if team_id is None:
                return
        try:
            loop.call_soon_threadsafe(self._schedule, run_id, team_id, force)
        except RuntimeError:  # the loop closed meanwhile: nobody listens there any more
            pass

    def _team_of(self, run_id: str) -> int | None:
        team_id = self._team_ids.get(run_id)
        if team_id is None:
            from runs.models import Run

            team_id = Run.objects.filter(pk=run_id).values_list("team_id", flat=True).first()
            if team_id is not None:
                if len(self._team_ids) > 10_000:
                    self._team_ids.clear()
                self._team_ids[run_id] = team_id
        return team_id

    # --- on the send loop ----------------------------------------------------------------
    def _schedule(self, run_id: str, team_id: int, force: bool) -> None:
        loop = asyncio.get_running_loop()
        now = loop.time()
        last = self._last.get(run_id)
        if force or last is None or now - last >= MIN_INTERVAL:
            self._send(loop, run_id, team_id)
        elif run_id not in self._pending:
            self._pending.add(run_id)
            loop.call_later(MIN_INTERVAL - (now - last), self._trailing, run_id, team_id)

    def _trailing(self, run_id: str, team_id: int) -> None:
        self._pending.discard(run_id)
        self._send(asyncio.get_running_loop(), run_id, team_id)

    def _send(self, loop: asyncio.AbstractEventLoop, run_id: str, team_id: int) -> None:
        now = loop.time()
        self._last[run_id] = now
        if len(self._last) > 5_000:
            self._last = {k: t for k, t in self._last.items() if now - t < MIN_INTERVAL}
        task = loop.create_task(self._deliver(run_id, team_id))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _deliver(self, run_id: str, team_id: int) -> None:
        from channels.layers import get_channel_layer

        layer = get_channel_layer()
        # ``change`` names this announcement: every consumer of a process that receives it
        # can share one render started after its first arrival there (``runs.consumers``).
        message = {"type": MESSAGE_TYPE, "run_id": run_id, "change": uuid.uuid4().hex}
        try:
            await layer.group_send(run_group(run_id), message)
            await layer.group_send(team_group(team_id), message)
        except Exception:  # a push is best effort: the page polls when it misses one
            log.warning("live update of run %s not sent", run_id, exc_info=True)


publisher = Publisher()


def publish_run_changed(
    run_id: Any, *, team_id: int | None = None, status_changed: bool = False
) -> None:
    """Announce, once the current transaction commits, that run ``run_id`` changed."""
    if publisher.loop() is None:
        return
    transaction.on_commit(partial(publisher.submit, str(run_id), team_id, status_changed))


def publish_group(group: str, message: dict[str, Any]) -> None:
    """Send ``message`` to the Channels ``group`` once the current transaction commits (best
    effort, on the same loop as the runs' pushes; nothing is sent when nobody can listen)."""
    if publisher.loop() is None:
        return
    transaction.on_commit(partial(_submit_group, group, message))


def _submit_group(group: str, message: dict[str, Any]) -> None:
    loop = publisher.loop()
    if loop is None:
        return

    def schedule() -> None:
        task = asyncio.get_running_loop().create_task(_deliver_group(group, message))
        publisher._tasks.add(task)
        task.add_done_callback(publisher._tasks.discard)

    try:
        loop.call_soon_threadsafe(schedule)
    except RuntimeError:  # the loop closed meanwhile: nobody listens there any more
        pass


async def _deliver_group(group: str, message: dict[str, Any]) -> None:
    from channels.layers import get_channel_layer

    try:
        await get_channel_layer().group_send(group, message)
    except Exception:  # a push is best effort: pages poll when they miss one
        log.warning("live update to %s not sent", group, exc_info=True)

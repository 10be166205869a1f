"""ASGI entry point: HTTP through Django, WebSockets through Channels."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import django
from asgiref.sync import sync_to_async
from django.conf import settings
from django.core import signals
from django.core.exceptions import RequestAborted
from django.core.handlers.asgi import ASGIHandler, get_script_prefix
from django.http import FileResponse, HttpResponseBase
from django.urls import set_script_prefix

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "agentops.settings")

#: A full garbage collection after this many of the middle generation's (see the end).
FULL_COLLECTION_AFTER = 100


class SyncChainASGIHandler(ASGIHandler):
    """Django's ASGI handler, with the sync part of a request (the request signals, the
    middleware chain and the view, closing the response) run in one hop per request to one
    of a few threads that keep their database connections.

    Django's own async path has three costs for a site whose middleware and views are sync:
    each middleware's hooks hop to the sync thread on their own (about 16 hops a request
    here, each trading the GIL with the event loop); the ``request_started`` and
    ``request_finished`` receivers are sent through ``sync_to_async`` too, on a thread made
    for each request (its thread-sensitive context); and each request gets a fresh database
    connection (connect, time zone, health check) on that thread. Here the whole sync part
    runs in one call on one of a few long-lived threads (``AGENTOPS_WEB_THREADS``), where the
    signals' receivers check and recycle that thread's connection as they do for Django's
    own thread; a slow request holds one of them, not the process. From the request's end
    until its answer has been sent, a task listens for the client going away, as Django's own
    handler does: a request whose client left while it waited for a thread is dropped when
    its turn comes (it never reaches Django), so the clients that gave up on a busy process
    do not hold it up for those still waiting. A response is sent as Django sends it. A
    streaming one (the SSE view, which is async: Django runs it through ``async_to_sync`` on
    the event loop) streams from the event loop until it ends or the client goes away, and is
    closed afterwards, as in Django."""

    def __init__(self) -> None:
        super().__init__()
        self._executor = ThreadPoolExecutor(
            max_workers=settings.AGENTOPS_WEB_THREADS, thread_name_prefix="django-http"
        )

    def load_middleware(self, is_async: bool = False) -> None:
        super().load_middleware(is_async=False)

    async def handle(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        try:
            body_file = await self.read_body(receive)
        except RequestAborted:
            return
        gone = threading.Event()
        listener = asyncio.create_task(self._listen(receive, gone))
        try:
            set_script_prefix(get_script_prefix(scope))
            response = await sync_to_async(
                self._respond, thread_sensitive=False, executor=self._executor
            )(scope, body_file, gone)
            if response is None:
                return
            if response.streaming:
                await self._stream(response, listener, send)
            else:
                await self.send_response(response, send)
        finally:
            listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await listener
            body_file.close()

    async def _listen(self, receive: Any, gone: threading.Event) -> None:
        """Note the client going away (``http.disconnect``, the only message after the body)."""
        with contextlib.suppress(RequestAborted):
            await self.listen_for_disconnect(receive)
        gone.set()

    def _respond(
        self, scope: dict[str, Any], body_file: Any, gone: threading.Event
    ) -> HttpResponseBase | None:
        if gone.is_set():
            return None  # its client left while it waited for this thread
        signals.request_started.send(sender=self.__class__, scope=scope)
        request, response = self.create_request(scope, body_file)
        if request is not None:
            response = self.get_response(request)
            response._handler_class = self.__class__
            if isinstance(response, FileResponse):
                response.block_size = self.chunk_size
        if not response.streaming:
            response.close()  # sends request_finished, on this thread
        return response

    async def _stream(self, response: HttpResponseBase, listener: asyncio.Task, send: Any) -> None:
        """Send a streaming response until it ends or the client goes away, then close it."""
        sender = asyncio.create_task(self.send_response(response, send))
        await asyncio.wait([listener, sender], return_when=asyncio.FIRST_COMPLETED)
        if not sender.done():
            sender.cancel()
        with contextlib.suppress(RequestAborted, asyncio.CancelledError):
            await sender
        await sync_to_async(response.close)()


django.setup(set_prefix=False)
django_asgi_app = SyncChainASGIHandler()

if settings.AGENTOPS_SERVE_STATIC:
    # One process serves its own static files (vendored htmx, CSS, admin); at scale a CDN
    # or the reverse proxy serves the output of collectstatic instead.
    from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler

    django_asgi_app = ASGIStaticFilesHandler(django_asgi_app)

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402
from django.urls import path  # noqa: E402

from agentops import wsframes  # noqa: E402
from approvals.consumers import InboxConsumer  # noqa: E402
from notifications.consumers import BellConsumer  # noqa: E402
from runs import consumers  # noqa: E402

# Under daphne, a frame sent to many sockets is built once and written at once (the module
# says how); under another server this changes nothing.
wsframes.install()

websocket_urlpatterns: list = [
    path("ws/runs/", consumers.RunListConsumer.as_asgi()),
    path("ws/runs/<uuid:run_id>/", consumers.RunConsumer.as_asgi()),
    path("ws/approvals/", InboxConsumer.as_asgi()),
    path("ws/notifications/", BellConsumer.as_asgi()),
]

application = ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        "websocket": AllowedHostsOriginValidator(
            AuthMiddlewareStack(URLRouter(websocket_urlpatterns))
        ),
    }
)
# What is loaded by now (Django, the apps, the URL and template caches) lives as long as the
# process: frozen out of the collector's generations, a full collection no longer walks it.
# Under load such collections were the pauses behind the page latency's tail.
gc.collect()
gc.freeze()
# What comes later cannot be frozen: a held WebSocket is some 220 tracked objects (protocol,
# consumer, its tasks and coroutines, scope, session), so a process holding 1,000 pages has
# a quarter of a million, and a full collection walking them stopped every socket and
# request in the process for 100-160 ms on a shared core, once or twice a minute while
# pages came and went. The young generations are collected as before; a full collection
# waits for ten times as many of theirs (Python's default is 10), so comes ten times as
# rarely. What it is there for, garbage cycles that outlived the young generations (a
# closed connection leaves some 20 objects of them), waits that much longer.
gc.set_threshold(*gc.get_threshold()[:2], FULL_COLLECTION_AFTER)

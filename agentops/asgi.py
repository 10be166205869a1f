"""ASGI entry point: HTTP through Django, WebSockets through Channels."""

from __future__ import annotations

import gc
import os
from concurrent.futures import ThreadPoolExecutor

import django
from asgiref.sync import sync_to_async
from django.conf import settings
from django.core.handlers.asgi import ASGIHandler
from django.db import close_old_connections
from django.http import HttpRequest, HttpResponseBase

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "agentops.settings")

#: A full garbage collection after this many of the middle generation's (see the end).
FULL_COLLECTION_AFTER = 100


class SyncChainASGIHandler(ASGIHandler):
    """Django's ASGI handler, with the middleware chain and the view run synchronously, in
    one hop per request to one of a few threads that keep their database connections.

    Django's own async path has two costs for a site whose middleware and views are sync:
    each middleware's hooks hop to the sync thread on their own (about 16 hops a request
    here, each trading the GIL with the event loop), and each request gets a fresh
    thread-sensitive context, so a fresh thread and a fresh database connection (connect,
    time zone, health check) per request. Both made a console page cost half as much again
    as its work. Here the whole sync chain runs in one call on one of a few long-lived
    threads (``AGENTOPS_WEB_THREADS``), whose connection is checked and recycled at the
    request's edges as ``request_started`` and ``request_finished`` do for Django's own
    thread; a slow request holds one of them, not the process. The SSE view is async: Django runs it
    through ``async_to_sync`` on the event loop as before, and its body streams from there."""

    def __init__(self) -> None:
        super().__init__()
        self._executor = ThreadPoolExecutor(
            max_workers=settings.AGENTOPS_WEB_THREADS, thread_name_prefix="django-http"
        )

    def load_middleware(self, is_async: bool = False) -> None:
        super().load_middleware(is_async=False)

    def _respond(self, request: HttpRequest) -> HttpResponseBase:
        close_old_connections()
        try:
            return self.get_response(request)
        finally:
            close_old_connections()

    async def get_response_async(self, request: HttpRequest) -> HttpResponseBase:
        return await sync_to_async(self._respond, thread_sensitive=False, executor=self._executor)(
            request
        )


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

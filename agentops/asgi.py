"""ASGI entry point: HTTP through Django, WebSockets through Channels."""

from __future__ import annotations

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "agentops.settings")
django_asgi_app = get_asgi_application()

from django.conf import settings  # noqa: E402

if settings.AGENTOPS_SERVE_STATIC:
    # One process serves its own static files (vendored htmx, CSS, admin); at scale a CDN
    # or the reverse proxy serves the output of collectstatic instead.
    from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler

    django_asgi_app = ASGIStaticFilesHandler(django_asgi_app)

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402
from django.urls import path  # noqa: E402

from approvals.consumers import InboxConsumer  # noqa: E402
from notifications.consumers import BellConsumer  # noqa: E402
from runs import consumers  # noqa: E402

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

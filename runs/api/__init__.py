"""The HTTP API at ``/api/v1/`` (OpenAPI at ``/api/v1/openapi.json``, docs at ``/api/v1/docs``).

Authentication: a personal API token (``Authorization: Bearer ao_…``, made with
``manage.py create_api_token``) or the console's session. Every error is an RFC 9457 problem
object. See the README's "HTTP API" section for the async job pattern it follows.
"""

from __future__ import annotations

from runs.api import problems
from runs.api.auth import SessionAuth, TokenAuth
from runs.api.event_views import router as event_router
from runs.api.openapi import DocumentedAPI
from runs.api.parsing import StrictJSONParser
from runs.api.run_views import router as run_router

api = DocumentedAPI(
    title="agentops",
    version="1",
    description=(
        "Submit and follow long-running agent runs. Submitting answers 202 with a Location to "
        "poll; send an Idempotency-Key to retry safely. Errors are application/problem+json."
    ),
    urls_namespace="api-v1",
    auth=[TokenAuth(), SessionAuth()],
    parser=StrictJSONParser(),
)
problems.install(api)
api.add_router("", run_router)
api.add_router("", event_router)

from approvals.api import router as approvals_router  # noqa: E402 - it builds on the above

api.add_router("", approvals_router)

__all__ = ["api"]

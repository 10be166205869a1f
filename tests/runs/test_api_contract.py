"""The API against its own OpenAPI document, with schemathesis: for every operation, generated
requests (valid and invalid) never get a 5xx, and every answer has a documented status, content
type, headers and body. Errors are problem objects, so this also checks that every error the
API gives, of any operation, is ``application/problem+json`` with the problem members.

The app runs in-process (WSGI, the test's own database connection), with a token of a seeded
team and runs in several states; generated run ids are often replaced by these real ones, and
submits often name a real workflow, so the checks reach past the 404s and 422s. The event
stream is left out: for a live run it never ends (``test_api_events`` covers it).
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from django.core import signals
from django.core.cache import cache
from django.core.handlers.wsgi import WSGIHandler
from django.db import close_old_connections
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from approvals.models import ApprovalRequest
from runs.api_models import ApiToken
from runs.models import Membership, Run, RunStatus, Team
from tests.runs.api_support import member

pytestmark = [pytest.mark.engine, pytest.mark.django_db]

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]

#: What the hooks draw real values from; filled by the ``seeded`` fixture before generation.
SEED: dict[str, Any] = {}

schema = schemathesis.openapi.from_wsgi("/api/v1/openapi.json", WSGIHandler()).exclude(
    path_regex=r"/stream$"
)


@schema.hook
def flatmap_path_parameters(ctx: Any, path_parameters: dict[str, Any] | None) -> Any:
    """Half of the generated ids become the seeded runs' and approval requests' ids."""
    params = path_parameters or {}
    real: dict[str, list[Any]] = {"run_id": SEED["runs"], "request_id": SEED["approvals"]}
    names = [name for name in params if real.get(name)]
    if not names:
        return st.just(path_parameters)
    swapped = st.fixed_dictionaries({name: st.sampled_from(real[name]) for name in names})
    return st.one_of(st.just(path_parameters), swapped.map(lambda ids: {**params, **ids}))


@schema.hook
def flatmap_body(ctx: Any, body: Any) -> Any:
    """Some submits name a registered workflow (with and without valid input)."""
    operation = ctx.operation
    if not isinstance(body, dict) or operation is None or operation.path != "/api/v1/runs":
        return st.just(body)
    fixed = {k: v for k, v in body.items() if k != "team"}
    return st.sampled_from(
        [
            body,
            {**fixed, "workflow": "t-steps"},
            {**fixed, "workflow": "t-steps", "input": {"n": 1}},
        ]
    )


_real_getaddrinfo = socket.getaddrinfo


def offline_getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
    """The network edge of callback URLs: IP literals resolve as they would, names are
    encoded as the resolver would (so bad names fail the same way) and then not found."""
    if isinstance(host, str):
        try:
            return _real_getaddrinfo(host, port, *args, flags=socket.AI_NUMERICHOST)
        except (socket.gaierror, UnicodeError, ValueError):
            host.encode("idna")
    raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")


@pytest.fixture
def in_process_app() -> Iterator[None]:
    """Keep the test's database connection across requests, as Django's test client does
    (the WSGI handler closes connections at the end of each request otherwise)."""
    signals.request_started.disconnect(close_old_connections)
    signals.request_finished.disconnect(close_old_connections)
    yield
    signals.request_started.connect(close_old_connections)
    signals.request_finished.connect(close_old_connections)


@pytest.fixture
def seeded(
    in_process_app: None,
    team: Team,
    drive: Any,
    settings: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> dict[str, Any]:
    settings.AGENTOPS_API_RATE_PER_MINUTE = 1_000_000
    settings.AGENTOPS_ALLOW_PRIVATE_CALLBACKS = False
    monkeypatch.setattr(socket, "getaddrinfo", offline_getaddrinfo)
    cache.clear()
    owner = member("alice", team, Membership.Role.ADMIN)
    _, text = ApiToken.mint(user=owner, team=team, name="contract")

    def start(workflow: str, data: dict[str, Any]) -> Run:
        return Run.start(workflow, data, team=team, actor="test", user=owner)[0]

    runs = [
        start("t-steps", {"n": 1}),  # queued
        drive(start("t-wait", {}).pk),  # waiting for the event "go"
        drive(start("t-steps", {"n": 2}).pk),  # succeeded
        drive(start("t-approve", {}).pk),  # waiting for a person
    ]
    paused = start("t-steps", {"n": 1})
    paused.pause(actor="test")
    statuses = [r.status for r in runs]
    assert statuses == [RunStatus.QUEUED, RunStatus.WAITING, RunStatus.SUCCEEDED, RunStatus.WAITING]
    SEED.update(
        token=text,
        runs=[str(r.pk) for r in [*runs, paused]],
        approvals=list(ApprovalRequest.objects.values_list("pk", flat=True)),
    )
    assert SEED["approvals"], "the approval workflow made no request"
    return SEED


@schema.parametrize()
@settings(
    max_examples=25,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
)
def test_every_answer_conforms_to_the_schema(case: Any, seeded: dict[str, Any]) -> None:
    case.call_and_validate(headers={"Authorization": f"Bearer {seeded['token']}"}, checks=CHECKS)

"""The signal form on a run's page: shown to operators while the run waits on an event, JSON
payload checked at the field, delivered by ``Run.signal`` with the person as actor."""

from __future__ import annotations

import json
from typing import Any

import pytest

from runs.forms import SIGNAL_PAYLOAD_MAX
from runs.models import Event, Run, RunStatus, Signal, Team, WaitKind
from runs.run_page import signal_form_id
from tests.runs.console_support import Cast, htmx_headers, make_cast, start

pytestmark = [pytest.mark.django_db, pytest.mark.engine]


@pytest.fixture
def cast(team: Team, other_team: Team) -> Cast:
    return make_cast(team, other_team)


@pytest.fixture
def waiting(cast: Cast, drive: Any) -> Run:
    run = drive(start("t-wait", team=cast.team, user=cast.owner).pk)
    assert (run.status, run.wait_kind, run.waiting_for) == (RunStatus.WAITING, "event", "go")
    return run


def send(client: Any, run: Run, payload: str, *, name: str = "go", htmx: bool = True) -> Any:
    headers = htmx_headers(signal_form_id(name)) if htmx else {}
    return client.post(
        f"/runs/{run.pk}/signal/", {"signal-name": name, "signal-payload": payload}, headers=headers
    )


def test_operators_see_the_form_while_the_run_waits_on_an_event(
    cast: Cast, waiting: Run, drive: Any
) -> None:
    form_id = signal_form_id("go")
    for who in ("owner", "operator"):
        html = cast.client(who).get(f"/runs/{waiting.pk}/").content.decode()
        assert f'<form id="{form_id}" class="signal-form" method="post"' in html
        assert f'action="/runs/{waiting.pk}/signal/"' in html and 'hx-preserve="true"' in html
        assert 'name="signal-name" value="go"' in html
        assert '<label for="id_signal-payload">Payload (JSON, optional)</label>' in html
    # The push carries it too (without a CSRF field: htmx sends the header).
    pushed = cast.client("owner").get(f"/runs/{waiting.pk}/", headers=htmx_headers("run-live"))
    assert f'id="{form_id}"' in pushed.content.decode()
    viewer = cast.client("viewer").get(f"/runs/{waiting.pk}/").content.decode()
    assert "signal-form" not in viewer
    # A run that waits on a timer gets no form.
    sleeping = drive(start("t-sleep", team=cast.team).pk)
    assert sleeping.wait_kind == WaitKind.TIMER
    html = cast.client("owner").get(f"/runs/{sleeping.pk}/").content.decode()
    assert "signal-form" not in html


def test_sending_the_signal_wakes_the_run_with_the_payload(
    cast: Cast, waiting: Run, drive: Any
) -> None:
    response = send(cast.client("operator"), waiting, '{"approved": true, "n": [1, 2]}')
    assert response.status_code == 200
    assert response["HX-Retarget"] == "#run-live" and response["HX-Reswap"] == "outerHTML"
    html = response.content.decode()
    assert html.lstrip().startswith('<section id="run-live"')
    assert "Signal &#x27;go&#x27; sent." in html and "toast-success" in html
    signal = Signal.objects.get(run=waiting)
    assert (signal.name, signal.payload, signal.actor) == (
        "go",
        {"approved": True, "n": [1, 2]},
        "user:lead",
    )
    event = Event.objects.get(run=waiting, kind="run.signal")
    assert (event.actor, event.actor_user_id, event.data) == (
        "user:lead",
        cast.operator.pk,
        {"name": "go"},
    )
    assert Run.objects.get(pk=waiting.pk).status == RunStatus.RUNNING
    assert "signal-form" not in html  # it no longer waits
    run = drive(waiting.pk)
    assert run.status == RunStatus.SUCCEEDED
    assert run.result == {"payload": {"approved": True, "n": [1, 2]}}


def test_an_empty_payload_sends_null_and_works_without_js(
    cast: Cast, waiting: Run, drive: Any
) -> None:
    client = cast.client("owner")
    response = send(client, waiting, "  ", htmx=False)
    assert response.status_code == 302 and response["Location"] == f"/runs/{waiting.pk}/"
    assert "Signal &#x27;go&#x27; sent." in client.get(response["Location"]).content.decode()
    assert drive(waiting.pk).result == {"payload": None}


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ("{'single': 'quotes'}", "Not valid JSON: Expecting property name enclosed in double"),
        ('{"a": 1', "Not valid JSON: Expecting"),
        ("[NaN]", "Not valid JSON: NaN is not allowed in JSON."),
        ("[" * 100_000 + "]" * 100_000, "larger than 64 KiB"),
        (json.dumps("x" * SIGNAL_PAYLOAD_MAX), "larger than 64 KiB"),
    ],
)
def test_a_bad_payload_is_an_error_at_the_field_and_sends_nothing(
    cast: Cast, waiting: Run, payload: str, message: str
) -> None:
    client = cast.client("owner")
    response = send(client, waiting, payload)
    assert response.status_code == 422
    html = response.content.decode()
    form_id = signal_form_id("go")
    # Only the form, with the error at the field and what was typed, and not kept over it.
    assert html.lstrip().startswith(f'<form id="{form_id}" class="signal-form"')
    assert "hx-preserve" not in html.split(">", 1)[0]
    assert 'id="id_signal-payload_errors"' in html and message in html
    assert 'aria-invalid="true"' in html
    plain = send(client, waiting, payload, htmx=False)
    assert plain.status_code == 422 and message in plain.content.decode()
    assert not Signal.objects.filter(run=waiting).exists()
    assert not Event.objects.filter(run=waiting, kind="run.signal").exists()
    assert Run.objects.get(pk=waiting.pk).status == RunStatus.WAITING


def test_deeply_nested_json_within_the_size_cap_is_an_error_too(cast: Cast, waiting: Run) -> None:
    response = send(cast.client("owner"), waiting, "[" * 30_000 + "]" * 30_000)
    assert response.status_code == 422
    assert "Not valid JSON: nested too deeply." in response.content.decode()


def test_only_operators_of_the_team_may_send(cast: Cast, waiting: Run) -> None:
    assert send(cast.client("viewer"), waiting, "1").status_code == 403
    assert send(cast.client("outsider"), waiting, "1").status_code == 404
    assert cast.client("owner").get(f"/runs/{waiting.pk}/signal/").status_code == 405
    assert not Signal.objects.filter(run=waiting).exists()


def test_a_finished_run_refuses_the_signal(cast: Cast, drive: Any) -> None:
    run = drive(start("t-noop", {"n": 1}, team=cast.team).pk)
    response = send(cast.client("owner"), run, "1")
    assert response.status_code == 200
    html = response.content.decode()
    assert "toast-error" in html and "cannot signal" in html
    assert not Signal.objects.filter(run=run).exists()


def test_payload_secrets_are_redacted_like_the_apis(cast: Cast, waiting: Run) -> None:
    send(cast.client("owner"), waiting, '{"api_key": "sk-live-123", "ok": 1}')
    stored = Signal.objects.get(run=waiting).payload
    assert stored["ok"] == 1 and "sk-live-123" not in json.dumps(stored)

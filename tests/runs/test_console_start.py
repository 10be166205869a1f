"""Starting a run from the console: the form generated from the workflow's input schema, the
team choice limited to START, and every way a start can be refused."""

from __future__ import annotations

import enum
from typing import Any, Literal

import pytest
from django import forms
from django.test import Client
from pydantic import BaseModel, Field

from runs.exceptions import InputInvalid
from runs.forms import WorkflowInputForm
from runs.models import Event, Membership, Run, Team
from runs.workflow import WorkflowDef, get_workflow, workflow
from tests.runs.console_support import Cast, htmx_headers, make_cast, make_user

pytestmark = [pytest.mark.django_db, pytest.mark.engine]


class Colour(enum.Enum):
    RED = "red"
    GREEN = "green"


class Nested(BaseModel):
    depth: int = 1


class KindsInput(BaseModel):
    title: str = Field(description="What to call it.")
    ratio: float = Field(default=0.5, gt=0, le=1)
    count: int = Field(default=2, ge=0)
    loud: bool = False
    colour: Colour = Colour.RED
    mode: Literal["fast", "slow"] = "fast"
    tags: list[str] = []
    nested: Nested = Nested()
    limit: int | None = None


@workflow(name="t-console-kinds", input=KindsInput)
def kinds_workflow(ctx: Any, data: KindsInput) -> dict[str, Any]:
    return data.model_dump(mode="json")


@pytest.fixture
def cast(team: Team, other_team: Team) -> Cast:
    return make_cast(team, other_team)


def test_the_input_form_follows_the_schema() -> None:
    form = WorkflowInputForm(workflow=get_workflow("t-console-kinds"))
    f = form.fields
    assert isinstance(f["title"], forms.CharField) and f["title"].required
    assert f["title"].help_text == "What to call it."
    assert isinstance(f["ratio"], forms.FloatField) and not f["ratio"].required
    assert isinstance(f["count"], forms.IntegerField) and f["count"].min_value == 0
    assert isinstance(f["loud"], forms.BooleanField)
    assert isinstance(f["colour"], forms.TypedChoiceField)
    assert [c for c, _ in f["colour"].choices] == ["", "red", "green"]
    assert [c for c, _ in f["mode"].choices] == ["", "fast", "slow"]
    assert isinstance(f["tags"], forms.JSONField) and isinstance(f["nested"], forms.JSONField)
    assert isinstance(f["limit"], forms.IntegerField) and not f["limit"].required
    assert f["count"].initial == 2 and f["colour"].initial == "red"


def test_the_form_gives_the_workflow_what_was_filled_in() -> None:
    wf = get_workflow("t-console-kinds")
    form = WorkflowInputForm(
        {
            "input-title": "<b>hi</b>",
            "input-ratio": "0.25",
            "input-count": "",
            "input-loud": "on",
            "input-colour": "green",
            "input-mode": "slow",
            "input-tags": '["a", "b"]',
            "input-nested": "",
            "input-limit": "",
        },
        workflow=wf,
    )
    assert form.is_valid(), form.errors
    data = form.input_data()
    assert data == {
        "title": "<b>hi</b>",
        "ratio": 0.25,
        "loud": True,
        "colour": "green",
        "mode": "slow",
        "tags": ["a", "b"],
    }
    assert wf.validate_input(data)["count"] == 2  # left out: the default applies


def test_input_errors_land_at_their_fields() -> None:
    wf = get_workflow("t-console-kinds")
    with pytest.raises(InputInvalid) as caught:
        wf.validate_input({"title": "x", "ratio": 0, "nested": {"depth": "deep"}})
    form = WorkflowInputForm({"input-title": "x"}, workflow=wf)
    assert form.is_valid()
    form.add_input_errors(caught.value.errors)
    assert "greater than 0" in form.errors["ratio"][0]
    assert form.errors["nested"][0].startswith("depth:")


def test_choosing_a_workflow_shows_its_form(cast: Cast) -> None:
    client = cast.client("owner")
    page = client.get("/runs/new/").content.decode()
    assert '<option value="t-console-kinds">' in page and "<form" in page
    assert 'id="start-form"' in page and 'name="input-title"' not in page
    chosen = client.get("/runs/new/", {"workflow": "t-console-kinds"}).content.decode()
    assert 'name="input-title"' in chosen and 'name="team"' in chosen
    fragment = client.get(
        "/runs/new/", {"workflow": "t-console-kinds"}, headers=htmx_headers("start-form")
    ).content.decode()
    assert fragment.lstrip().startswith('<div id="start-form">')
    assert 'name="input-ratio"' in fragment and "<html" not in fragment


def test_start_a_run(cast: Cast) -> None:
    client = cast.client("owner")
    response = client.post(
        "/runs/new/",
        {
            "workflow": "t-console-kinds",
            "team": cast.team.pk,
            "input-title": "nightly",
            "input-count": "7",
            "input-colour": "green",
            "input-mode": "fast",
        },
    )
    run = Run.objects.get()
    assert response.status_code == 302 and response["Location"] == f"/runs/{run.pk}/"
    assert run.workflow == "t-console-kinds" and run.team == cast.team
    assert run.created_by == cast.owner
    assert run.input["title"] == "nightly" and run.input["count"] == 7
    assert run.input["colour"] == "green" and run.input["loud"] is False
    created = Event.objects.get(run=run, kind="run.created")
    assert (created.actor, created.actor_user_id) == ("user:owner", cast.owner.pk)
    assert "Started t-console-kinds." in client.get(response["Location"]).content.decode()


def test_invalid_input_is_shown_at_the_fields_and_starts_nothing(cast: Cast) -> None:
    client = cast.client("owner")
    cases = [
        ({"input-count": "lots"}, "count", "Enter a whole number"),
        ({"input-title": "t", "input-ratio": "0"}, "ratio", "greater than 0"),
        ({"input-title": "t", "input-tags": "[oops"}, "tags", "Enter a valid JSON"),
        ({"input-title": "t", "input-mode": "sideways"}, "mode", "Select a valid choice"),
    ]
    for data, field, message in cases:
        response = client.post(
            "/runs/new/", {"workflow": "t-console-kinds", "team": cast.team.pk, **data}
        )
        assert response.status_code == 422
        errors = response.context["input_form"].errors
        assert any(message in e for e in errors[field]), errors
        assert f'id="id_input-{field}_errors"' in response.content.decode()
    missing = client.post("/runs/new/", {"workflow": "t-console-kinds", "team": cast.team.pk})
    assert "title" in missing.context["input_form"].errors
    assert not Run.objects.exists()


def test_an_unknown_workflow_is_reported(cast: Cast) -> None:
    client = cast.client("owner")
    response = client.post("/runs/new/", {"workflow": "no-such-thing", "team": cast.team.pk})
    assert response.status_code == 422
    html = response.content.decode()
    assert "unknown workflow &#x27;no-such-thing&#x27;" in html
    assert client.get("/runs/new/", {"workflow": "no-such-thing"}).status_code == 200
    assert not Run.objects.exists()


def test_teams_offered_are_those_where_the_user_may_start(cast: Cast) -> None:
    Membership.objects.create(user=cast.owner, team=cast.other_team, role="viewer")
    client = cast.client("owner")
    form = client.get("/runs/new/", {"workflow": "t-steps"}).context["start_form"]
    assert list(form.fields["team"].queryset) == [cast.team]
    # Posting a team where the user only views is refused at the field.
    response = client.post(
        "/runs/new/", {"workflow": "t-steps", "team": cast.other_team.pk, "input-n": "1"}
    )
    assert response.status_code == 422
    assert "team" in response.context["start_form"].errors
    assert not Run.objects.exists()


def test_people_who_may_not_start_anywhere(cast: Cast) -> None:
    client = cast.client("viewer")
    page = client.get("/runs/new/")
    assert page.status_code == 200 and "You may not start runs" in page.content.decode()
    response = client.post(
        "/runs/new/", {"workflow": "t-steps", "team": cast.team.pk, "input-n": "1"}
    )
    assert response.status_code == 403
    nobody = make_user("nobody")
    anon = Client()
    anon.force_login(nobody)
    assert anon.post("/runs/new/", {"workflow": "t-steps"}).status_code == 403
    assert not Run.objects.exists()


def test_a_workflow_without_a_schema_takes_json(cast: Cast) -> None:
    form = WorkflowInputForm({"input-json": '{"a": 1}'}, workflow=get_workflow("t-nondet"))
    assert form.is_valid() and form.input_data() == {"a": 1}
    empty = WorkflowInputForm({"input-json": ""}, workflow=get_workflow("t-nondet"))
    assert empty.is_valid() and empty.input_data() == {}
    assert isinstance(get_workflow("t-nondet"), WorkflowDef)

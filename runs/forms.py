"""Forms of the console: raise a budget, retry from a step, start a run.

A workflow's input form is generated from its pydantic JSON schema: strings, numbers,
integers, booleans and enums get their own fields; anything else is a JSON text area. The
form only shapes the input; the workflow's own validation (``InputInvalid``) is the judge,
and its errors are shown at the fields they name.
"""

from __future__ import annotations

import json
from typing import Any

from django import forms
from django.urls import reverse

from runs.exceptions import AgentopsError
from runs.models import Step, Team
from runs.workflow import WorkflowDef, all_workflows

BUDGET_KINDS = ("usd", "tokens", "actions", "wall_seconds")


def errors_to_fields(form: forms.Form, exc: AgentopsError, fields: tuple[str, ...]) -> None:
    """Put an operation's message ("usd: the new limit …") at the field it names."""
    message = str(exc)
    head, sep, rest = message.partition(": ")
    name = head.rsplit(".", 1)[-1]
    if sep and name in fields and name in form.fields:
        form.add_error(name, rest)
    else:
        form.add_error(None, message)


class RaiseBudgetForm(forms.Form):
    usd = forms.DecimalField(
        required=False, min_value=0, max_digits=12, decimal_places=4, label="Cost limit (USD)"
    )
    tokens = forms.IntegerField(required=False, min_value=0, label="Token limit")
    actions = forms.IntegerField(required=False, min_value=0, label="Action limit")
    wall_seconds = forms.IntegerField(required=False, min_value=0, label="Wall time limit (s)")

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        if not self.errors and all(data.get(k) is None for k in BUDGET_KINDS):
            raise forms.ValidationError("Give at least one new limit.")
        return data

    def limits(self) -> dict[str, Any]:
        return {k: self.cleaned_data.get(k) for k in BUDGET_KINDS}


class RetryForm(forms.Form):
    """The step of run ``run_id`` to retry from: a list of its steps, or, for a run with more
    than ``LISTED`` (a run of hours may have thousands), the step's number."""

    #: Runs with at most this many steps offer them in a list.
    LISTED = 200

    step = forms.TypedChoiceField(
        coerce=int,
        label="Retry from step",
        error_messages={"invalid_choice": "The run has no step %(value)s."},
    )

    def __init__(self, *args: Any, run_id: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.run_id = run_id
        latest = list(
            Step.objects.filter(run_id=run_id)
            .order_by("-seq")
            .only("seq", "name")[: self.LISTED + 1]
        )
        self.has_steps = bool(latest)
        self.listed = len(latest) <= self.LISTED
        if self.listed:
            choices = [(s.seq, f"{s.seq}. {s.name}") for s in reversed(latest)]
            self.fields["step"].choices = choices
        else:
            self.fields["step"] = forms.IntegerField(
                label="Retry from step number",
                min_value=0,
                help_text="The numbers are on the run's steps page.",
            )

    def clean_step(self) -> int:
        seq = self.cleaned_data["step"]
        # A listed step is one of the run's already (the choice field checked); a number is
        # looked up.
        if not self.listed and not Step.objects.filter(run_id=self.run_id, seq=seq).exists():
            raise forms.ValidationError(f"The run has no step {seq}.")
        return seq


class StartForm(forms.Form):
    workflow = forms.CharField(max_length=100, widget=forms.HiddenInput)
    team = forms.ModelChoiceField(queryset=Team.objects.none(), empty_label=None)

    def __init__(self, *args: Any, teams: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["team"].queryset = teams


class WorkflowChoiceForm(forms.Form):
    """The workflow picker. A plain text value, so that an unknown name reaches the registry
    and is reported with the registry's own message."""

    workflow = forms.CharField(label="Workflow", max_length=100, widget=forms.Select)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        url = reverse("run-new")
        self.fields["workflow"].widget.choices = [("", "Choose a workflow")] + [
            (w.name, f"{w.name} — {w.description}" if w.description else w.name)
            for w in all_workflows()
        ]
        # With htmx, choosing loads the workflow's form in place; without, the button does.
        self.fields["workflow"].widget.attrs.update(
            {
                "hx-get": url,
                "hx-trigger": "change",
                "hx-target": "#start-form",
                "hx-swap": "outerHTML",
                "hx-push-url": "true",
            }
        )


# --- input forms from JSON schema ----------------------------------------------------------
def _resolve(schema: dict[str, Any], root: dict[str, Any]) -> dict[str, Any]:
    ref = schema.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/$defs/"):
        target = root.get("$defs", {}).get(ref.split("/")[-1], {})
        return {**target, **{k: v for k, v in schema.items() if k != "$ref"}}
    return schema


def _simplify(schema: dict[str, Any], root: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    """The property's schema with ``$ref`` resolved and ``X | None`` unwrapped; and whether
    null is allowed."""
    schema = _resolve(schema, root)
    options = schema.get("anyOf")
    if isinstance(options, list):
        non_null = [o for o in options if o.get("type") != "null"]
        nullable = len(non_null) < len(options)
        if len(non_null) == 1:
            inner = _resolve(non_null[0], root)
            merged = {**inner, **{k: v for k, v in schema.items() if k != "anyOf"}}
            return merged, nullable
        return schema, nullable
    return schema, False


class JSONValueField(forms.JSONField):
    """A JSON text area that keeps "no value" apart from JSON ``null``."""

    widget = forms.Textarea(attrs={"rows": 4, "spellcheck": "false", "class": "mono"})


def _field_for(schema: dict[str, Any], *, required: bool, nullable: bool) -> forms.Field:
    label = schema.get("title")
    help_text = schema.get("description", "")
    common: dict[str, Any] = {"label": label, "help_text": help_text, "required": required}
    default = schema.get("default")
    kind = schema.get("type")
    if "enum" in schema or "const" in schema:
        values = schema.get("enum") or [schema.get("const")]
        by_key = {json.dumps(v) if not isinstance(v, str) else v: v for v in values}
        choices = [(k, str(v)) for k, v in by_key.items()]
        if not required:
            choices = [("", "—"), *choices]
        field: forms.Field = forms.TypedChoiceField(
            choices=choices, coerce=lambda k: by_key[k], empty_value=None, **common
        )
        if default is not None:
            field.initial = default if isinstance(default, str) else json.dumps(default)
        return field
    if kind == "boolean":
        common["required"] = False  # an unticked box is False, not missing
        return forms.BooleanField(initial=bool(default), **common)
    if kind == "integer":
        return forms.IntegerField(
            min_value=schema.get("minimum"),
            max_value=schema.get("maximum"),
            initial=default,
            **common,
        )
    if kind == "number":
        return forms.FloatField(
            min_value=schema.get("minimum"),
            max_value=schema.get("maximum"),
            initial=default,
            **common,
        )
    if kind == "string" and not schema.get("format", "").startswith("binary"):
        return forms.CharField(
            max_length=schema.get("maxLength"),
            min_length=schema.get("minLength"),
            initial=default,
            strip=False,
            **common,
        )
    field = JSONValueField(**common)
    if "default" in schema:
        field.initial = json.dumps(default)
    if not common["help_text"]:
        field.help_text = "JSON" + (" (null allowed)" if nullable else "")
    return field


class WorkflowInputForm(forms.Form):
    """The input of one workflow, one field per top-level property of its schema."""

    prefix = "input"

    def __init__(self, *args: Any, workflow: WorkflowDef, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.workflow = workflow
        schema = workflow.input_schema()
        self.free_form = not schema.get("properties")
        if self.free_form:
            self.fields["json"] = JSONValueField(
                required=False, label="Input", help_text="Any JSON value (empty: {})."
            )
            return
        required = set(schema.get("required", []))
        for name, prop in schema["properties"].items():
            simple, nullable = _simplify(prop, schema)
            simple.setdefault("title", name.replace("_", " ").capitalize())
            self.fields[name] = _field_for(simple, required=name in required, nullable=nullable)

    def input_data(self) -> Any:
        """The input to validate: empty optional fields are left out (their default applies)."""
        if self.free_form:
            value = self.cleaned_data.get("json")
            return {} if value is None else value
        data: dict[str, Any] = {}
        for name, field in self.fields.items():
            value = self.cleaned_data.get(name)
            if isinstance(field, forms.BooleanField):
                data[name] = bool(value)
            elif value is not None and value != "":
                data[name] = value
            elif value == "" and field.required:
                data[name] = value
        return data

    def add_input_errors(self, errors: list[dict[str, Any]]) -> None:
        """Show ``InputInvalid.errors`` at the fields they name."""
        for err in errors:
            loc = [str(p) for p in err.get("loc", [])]
            name = loc[0] if loc else ""
            message = err.get("msg", "invalid")
            if len(loc) > 1:
                message = f"{'.'.join(loc[1:])}: {message}"
            if name in self.fields:
                self.add_error(name, message)
            else:
                self.add_error(None, f"{'.'.join(loc) or 'input'}: {message}")


# --- signals and bulk actions --------------------------------------------------------------
#: The largest signal payload the console accepts, in bytes of JSON text.
SIGNAL_PAYLOAD_MAX = 64 * 1024


def _no_constant(name: str) -> Any:
    # NaN and Infinity are not JSON: PostgreSQL's jsonb would refuse them later.
    raise ValueError(f"{name} is not allowed in JSON")


class SignalForm(forms.Form):
    """Send the signal a run waits on (``ctx.wait_for_event(name)``), with an optional JSON
    payload: text that is not JSON, or is larger than ``SIGNAL_PAYLOAD_MAX``, is an error at
    the field and nothing is sent."""

    prefix = "signal"

    name = forms.CharField(max_length=200, widget=forms.HiddenInput)
    payload = forms.CharField(
        required=False,
        label="Payload (JSON, optional)",
        help_text="Delivered to the workflow as the wait's result; empty sends null.",
        widget=forms.Textarea(attrs={"rows": 3, "spellcheck": "false", "class": "mono"}),
    )

    def clean_payload(self) -> Any:
        text = self.cleaned_data.get("payload") or ""
        if not text.strip():
            return None
        if len(text.encode()) > SIGNAL_PAYLOAD_MAX:
            raise forms.ValidationError(
                f"The payload is larger than {SIGNAL_PAYLOAD_MAX // 1024} KiB."
            )
        try:
            return json.loads(text, parse_constant=_no_constant)
        except json.JSONDecodeError as exc:
            raise forms.ValidationError(
                f"Not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})."
            ) from None
        except ValueError as exc:
            raise forms.ValidationError(f"Not valid JSON: {exc}.") from None
        except RecursionError:
            raise forms.ValidationError("Not valid JSON: nested too deeply.") from None


#: The most runs one bulk action may name (a page of the list holds 50).
BULK_MAX = 100
BULK_ACTIONS = {"cancel": "Cancel", "pause": "Pause", "resume": "Resume"}


class BulkActionForm(forms.Form):
    """Cancel, pause or resume the selected runs. Ids that are not run ids are kept apart
    (they name no run, like the ids of runs the person may not see)."""

    action = forms.ChoiceField(choices=list(BULK_ACTIONS.items()))
    run = forms.MultipleChoiceField(required=False)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["run"].valid_value = lambda value: True  # any text; parsed in clean_run

    def clean_run(self) -> list[str]:
        values = list(dict.fromkeys(self.cleaned_data.get("run") or []))
        if not values:
            raise forms.ValidationError("Select at least one run.")
        if len(values) > BULK_MAX:
            raise forms.ValidationError(f"Select at most {BULK_MAX} runs at a time.")
        return values

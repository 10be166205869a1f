"""What a reviewer sees of one request: the run's steps so far, the proposed action, the
editable fields with what they typed, the diff of their edits, and the decision history.

Agent output and payloads are untrusted: everything here is plain text that the templates
escape; nothing is marked safe. The edits are only shaped here (text, or JSON parsed with
the error at its field); ``ApprovalRequest.decide`` is the judge of what may be edited.
"""

from __future__ import annotations

import difflib
import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.core.serializers.json import DjangoJSONEncoder
from django.http import QueryDict
from django.utils import timezone

from approvals.inbox import deadline_state
from approvals.models import MAX_COMMENT, MAX_EDIT_BYTES, ApprovalRequest, Decision
from runs.models import Step
from runs.run_page import pretty_json

#: The latest steps shown before the gate, and how much of each output.
STEPS_SHOWN = 30
OUTPUT_CHARS = 280
#: A string field longer than this (or with a line break) is edited in a text area.
LINE_CHARS = 100
#: Lines of a text diff shown at most.
DIFF_LINES = 400


@dataclass
class EditField:
    """One editable field of the payload as an input: its kind, what it shows, its error."""

    name: str
    index: int
    kind: str  # "text", "textarea" (strings) or "json" (any other JSON value)
    original: Any
    value: str
    error: str = ""

    @property
    def input_name(self) -> str:
        return f"edit:{self.name}"


@dataclass
class FieldDiff:
    """Old → new of one edited field; ``lines`` is a line diff when both are long text."""

    name: str
    old: str
    new: str
    lines: list[tuple[str, str]] = field(default_factory=list)


def _as_text(value: Any) -> str:
    return value if isinstance(value, str) else pretty_json(value)


def _normalise(text: str) -> str:
    # Browsers send a text area's line breaks as CRLF.
    return text.replace("\r\n", "\n")


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON value")


def edit_fields(
    req: ApprovalRequest, data: QueryDict | None = None
) -> tuple[list[EditField], dict[str, Any]]:
    """The editable fields (bound to ``data`` when the person posted) and the edits: the
    fields whose value differs from the payload's. A JSON field that does not parse has
    its error set and is left out of the edits."""
    payload = req.payload if isinstance(req.payload, dict) else {}
    fields: list[EditField] = []
    edits: dict[str, Any] = {}
    for index, name in enumerate(req.editable):
        original = payload.get(name)
        if isinstance(original, str):
            long = "\n" in original or len(original) > LINE_CHARS
            kind = "textarea" if long else "text"
        else:
            kind = "json"
        item = EditField(name, index, kind, original, _as_text(original))
        fields.append(item)
        raw = data.get(item.input_name) if data is not None else None
        if raw is None:
            continue
        item.value = raw
        if len(raw.encode()) > MAX_EDIT_BYTES:
            item.error = f"longer than {MAX_EDIT_BYTES // 1024} KB"
            continue
        if kind == "json":
            try:
                new = json.loads(raw, parse_constant=_reject_constant)
            except ValueError as exc:
                item.error = f"not valid JSON: {exc}"
                continue
        else:
            new = _normalise(raw)
            if new == _normalise(original):
                continue
        if new != original:
            edits[name] = new
    return fields, edits


def text_diff(old: str, new: str) -> list[tuple[str, str]]:
    """A unified line diff of two texts as (kind, line): kind is "del", "ins", "same" or
    "hunk"; empty when both fit on one line (old → new says it all)."""
    if "\n" not in old and "\n" not in new:
        return []
    lines: list[tuple[str, str]] = []
    for line in difflib.unified_diff(old.splitlines(), new.splitlines(), lineterm="", n=2):
        if line.startswith(("---", "+++")):
            continue
        kind = {"-": "del", "+": "ins", "@": "hunk"}.get(line[:1], "same")
        lines.append((kind, line[1:] if kind != "hunk" else "…"))
        if len(lines) >= DIFF_LINES:
            lines.append(("hunk", "… (diff cut short)"))
            break
    return lines


def diff_of(payload: Any, edits: dict[str, Any]) -> list[FieldDiff]:
    """Old → new for each edited field, in the order of the edits."""
    base = payload if isinstance(payload, dict) else {}
    out = []
    for name, new in edits.items():
        old = base.get(name)
        old_text, new_text = _as_text(old), _as_text(new)
        both_text = isinstance(old, str) and isinstance(new, str)
        out.append(
            FieldDiff(name, old_text, new_text, text_diff(old_text, new_text) if both_text else [])
        )
    return out


def _short(value: Any) -> str:
    if value is None:
        return ""
    text = (
        value
        if isinstance(value, str)
        else json.dumps(value, ensure_ascii=False, cls=DjangoJSONEncoder, sort_keys=True)
    )
    return text if len(text) <= OUTPUT_CHARS else text[: OUTPUT_CHARS - 1] + "…"


def agent_steps(req: ApprovalRequest) -> tuple[list[dict[str, Any]], bool]:
    """The run's completed steps before the gate (the latest ``STEPS_SHOWN``), oldest
    first, each with a short output; and whether earlier ones were left out."""
    rows = list(
        Step.objects.filter(run_id=req.run_id, seq__lt=req.seq, status=Step.Status.COMPLETED)
        .order_by("-seq")
        .only("seq", "name", "kind", "output", "finished_at")[: STEPS_SHOWN + 1]
    )
    more = len(rows) > STEPS_SHOWN
    return [{"step": s, "output": _short(s.output)} for s in reversed(rows[:STEPS_SHOWN])], more


def history(req: ApprovalRequest) -> list[dict[str, Any]]:
    return [
        {"decision": d, "diffs": diff_of(req.payload, d.edits or {})}
        for d in req.decisions.select_related("reviewer").order_by("created_at", "pk")
    ]


def detail_context(
    req: ApprovalRequest,
    user: Any,
    *,
    data: QueryDict | None = None,
    error: str = "",
    now: datetime | None = None,
) -> dict[str, Any]:
    """Everything the detail pane shows for ``user``: ``data`` is what they posted (kept in
    the form after an error), ``error`` the message shown at the form."""
    now = now or timezone.now()
    fields, edits = edit_fields(req, data)
    decisions = history(req)
    approvals = len(
        {
            d["decision"].reviewer_id
            for d in decisions
            if d["decision"].verdict == Decision.Verdict.APPROVE and d["decision"].reviewer_id
        }
    )
    why_not = why_not_approve = ""
    if req.is_pending:
        why_not = req.refusal(user, verdict=Decision.Verdict.REJECT)
        why_not_approve = why_not or req.refusal(user, verdict=Decision.Verdict.APPROVE)
    steps, more_steps = agent_steps(req)
    return {
        "req": req,
        "run": req.run,
        "steps": steps,
        "more_steps": more_steps,
        "payload_json": pretty_json(req.payload),
        "fields": fields,
        "diffs": diff_of(req.payload, edits),
        "field_errors": [f for f in fields if f.error],
        "comment": (data.get("comment", "") if data is not None else ""),
        "max_comment": MAX_COMMENT,
        "decisions": decisions,
        "approvals": approvals,
        "may_decide": req.is_pending and not why_not,
        "may_approve": req.is_pending and not why_not_approve,
        "why_not": why_not or why_not_approve,
        "error": error,
        "deadline_state": deadline_state(req, now),
        "outcome_comment": (req.outcome or {}).get("comment", "") if req.outcome else "",
        "now": now,
        "nav": "approvals",
    }

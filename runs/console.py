"""What the runs list shows: run filters, keyset pages and the rows (a run's own page is
``runs.run_page``).

Shared by the views and the WebSocket consumers, so a pushed partial is the same HTML as the
page's. Everything here starts from ``runs_visible_to(user)``: a run of another team is never
read, counted or rendered.
"""

from __future__ import annotations

import functools
import html
import re
import threading
import uuid
from collections import OrderedDict
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from types import MappingProxyType
from typing import Any
from urllib.parse import urlencode

from django import forms
from django.db import router
from django.db.models import Q, QuerySet
from django.http import QueryDict
from django.template.loader import render_to_string
from django.utils import timezone
from django.utils.safestring import SafeString, mark_safe
from django.utils.timesince import timesince
from django.utils.translation import get_language

from agentops.paths import id_path_format, path
from runs.models import Run, RunStatus, WaitKind
from runs.permissions import (
    OPERATE,
    START,
    VIEW,
    TeamRole,
    runs_visible_to,
    team_roles,
)
from runs.run_page import EPOCH, budget_fraction, budget_level, progress_figures, status_view
from runs.statements import KeptStatements
from runs.workflow import all_workflows

PAGE_SIZE = 50
#: The columns a row of the list reads (status badge, progress, budget, age, team, owner).
#: Loading only these keeps the inputs, results and errors (agent data, possibly large JSON)
#: out of every page. They are read as values into ``ListedRun``, field for field.
LIST_COLUMNS = (
    "id",
    "team_id",
    "workflow",
    "status",
    "wait_kind",
    "stop_requested",
    "progress",
    "idle_deadline_at",
    "last_activity_at",
    "lease_expires_at",
    "limit_usd",
    "limit_tokens",
    "limit_actions",
    "limit_wall_seconds",
    "spent_usd",
    "spent_tokens",
    "spent_actions",
    "created_at",
    "started_at",
    "finished_at",
)

#: Views of the status filter beyond the stored statuses (name, label, condition).
DERIVED_STATUSES: list[tuple[str, str]] = [
    ("retrying", "Retrying"),
    ("stalled", "Stalled"),
    ("waiting-person", "Waiting on a person"),
    ("waiting-timer-event", "Waiting on a timer or event"),
    ("over-budget", "Over 80% of budget"),
]


def derived_condition(name: str, now: datetime) -> Q:
    if name == "retrying":
        return Q(status=RunStatus.WAITING, wait_kind=WaitKind.RETRY)
    if name == "stalled":
        return Run.stalled_condition(now)
    if name == "waiting-person":
        return Q(status=RunStatus.WAITING, wait_kind=WaitKind.APPROVAL)
    if name == "waiting-timer-event":
        return Q(status=RunStatus.WAITING, wait_kind__in=[WaitKind.TIMER, WaitKind.EVENT])
    if name == "over-budget":
        # Warned of (by a step, or by the sweep for wall time) and not finished: a finished
        # run's budget needs nobody's attention any more.
        return ~Q(budget_warned=[]) & Q(finished_at__isnull=True)
    raise ValueError(name)


_HEX_ID = re.compile(r"^[0-9a-fA-F-]{4,36}$")


def id_range(text: str) -> tuple[uuid.UUID, uuid.UUID] | None:
    """The ids that start with ``text`` (at least 4 hex digits of a run id, typed with or
    without hyphens) as a range of the primary key, which its index answers (``id::text
    LIKE`` read every run). None when ``text`` is no such prefix ("----" matched every run)."""
    if not _HEX_ID.match(text):
        return None
    digits = text.replace("-", "").lower()
    if not 4 <= len(digits) <= 32:
        return None
    return uuid.UUID(digits.ljust(32, "0")), uuid.UUID(digits.ljust(32, "f"))


class RunFilterForm(forms.Form):
    """The list's filters; an invalid value is reported at its field and ignored."""

    status = forms.ChoiceField(required=False)
    workflow = forms.ChoiceField(required=False)
    team = forms.ChoiceField(required=False)
    owner = forms.CharField(required=False, max_length=150, label="Owner (username)")
    created_after = forms.DateTimeField(
        required=False,
        label="Created from",
        widget=forms.DateTimeInput(attrs={"type": "datetime-local"}),
    )
    created_before = forms.DateTimeField(
        required=False,
        label="Created before",
        widget=forms.DateTimeInput(attrs={"type": "datetime-local"}),
    )
    q = forms.CharField(required=False, max_length=200, label="Search id or input")

    def __init__(self, data: Any, *, user: Any, teams: list[TeamRole] | None = None) -> None:
        super().__init__(data)
        teams = team_roles(user) if teams is None else teams
        for name, choices in self.choices_for(teams).items():
            self.fields[name].choices = choices

    @staticmethod
    def choices_for(teams: list[TeamRole]) -> dict[str, list[tuple[str, str]]]:
        return {
            "status": [("", "Any status"), *RunStatus.choices, *DERIVED_STATUSES],
            "workflow": [("", "Any workflow")] + [(w.name, w.name) for w in all_workflows()],
            "team": [("", "Any team")] + [(t.slug, t.name) for t in teams],
        }

    @classmethod
    def filters_in(cls, params: QueryDict) -> bool:
        """Whether ``params`` sets any filter (otherwise the list needs no form to filter)."""
        return any(params.get(name) for name in cls.base_fields)

    def value(self, name: str) -> Any:
        return self.cleaned_data.get(name) if name not in self.errors else None


def filter_runs(
    user: Any,
    filters: Mapping[str, Any] | None,
    *,
    now: datetime | None = None,
    teams: list[TeamRole] | None = None,
) -> QuerySet[Run]:
    """The runs ``user`` may see that match ``filters``, the valid values of the filter form
    (``FilterState.values``; all runs without them); ``teams``, their roles when the caller
    has read them already. The list keeps the statement compiled from this under
    ``list_statement_key``: a condition that reads anything more (as the stalled view reads
    the time) must be named there."""
    now = now or timezone.now()
    if teams is None or getattr(user, "is_superuser", False):
        qs = runs_visible_to(user)  # a superuser's teams: a subquery, not a list of all
    else:
        qs = Run.objects.filter(team_id__in=[t.id for t in teams if t.holds(VIEW)])
    if not filters:  # no filters
        return qs
    status = filters.get("status")
    if status in RunStatus.values:
        qs = qs.filter(status=status)
    elif status:
        qs = qs.filter(derived_condition(status, now))
    if workflow := filters.get("workflow"):
        qs = qs.filter(workflow=workflow)
    if team := filters.get("team"):
        qs = qs.filter(team__slug=team)
    if owner := filters.get("owner"):
        qs = qs.filter(created_by__username=owner)
    if after := filters.get("created_after"):
        qs = qs.filter(created_at__gte=after)
    if before := filters.get("created_before"):
        qs = qs.filter(created_at__lt=before)
    if text := (filters.get("q") or "").strip():
        qs = qs.filter(search_condition(text))
    return qs


def search_condition(text: str) -> Q:
    """Runs whose input contains ``text`` (any case), or whose id starts with it. On
    PostgreSQL each half reads an index: the input's trigrams (migration 0012) and the
    primary key's range."""
    match = Q(input__icontains=text)
    if bounds := id_range(text):
        match |= Q(id__gte=bounds[0], id__lte=bounds[1])
    return match


# --- keyset pages on (created_at, id) ----------------------------------------------------


def encode_cursor(run: Run) -> str:
    micros = (run.created_at - EPOCH) // timedelta(microseconds=1)
    return f"{micros}_{run.pk.hex}"


def decode_cursor(text: str) -> tuple[datetime, str] | None:
    micros, _, hex_id = text.partition("_")
    if not micros.lstrip("-").isdigit() or not re.fullmatch(r"[0-9a-f]{32}", hex_id):
        return None
    try:
        return EPOCH + timedelta(microseconds=int(micros)), hex_id
    except OverflowError:
        return None


@dataclass
class Page:
    runs: list[Run]
    newer: str | None  # cursor of the page before (newer runs), if any
    older: str | None  # cursor of the page after (older runs), if any


def keyset_page(
    qs: QuerySet[Any] | Callable[[], QuerySet[Any]],
    *,
    before: str = "",
    after: str = "",
    size: int | None = None,
    wrap: Callable[[Any], Any] | None = None,
    kept: tuple[KeptStatements, Hashable, str] | None = None,
) -> Page:
    """One page, newest first, without counting the table: ``size + 1`` rows say whether
    there is another page, and the cursors are the (created_at, id) of the edge rows.
    ``wrap`` turns each row read into the page's row (one with ``created_at`` and ``pk``).
    ``qs`` may be a function that builds the query set; with ``kept`` (the statements, a
    key that determines the query set, its database) it is built only while the page's
    statement is not kept yet."""
    size = size or PAGE_SIZE
    build = qs if callable(qs) else lambda: qs

    def fetch(page: Callable[[], QuerySet[Any]]) -> list[Any]:
        if kept is None:
            rows = list(page())
        else:
            statements, key, alias = kept
            rows = statements.rows((key, before, after, size), alias, page)
        return [wrap(row) for row in rows] if wrap else rows

    if after and (cur := decode_cursor(after)):
        at, pk = cur
        rows = fetch(
            lambda: (
                build()
                .filter(Q(created_at__gt=at) | Q(created_at=at, id__gt=uuid.UUID(pk)))
                .order_by("created_at", "id")[: size + 1]
            )
        )
        more_newer = len(rows) > size
        rows = rows[:size][::-1]
        return Page(
            rows,
            newer=encode_cursor(rows[0]) if rows and more_newer else None,
            older=encode_cursor(rows[-1]) if rows else None,
        )
    cur = decode_cursor(before) if before else None

    def newest_first() -> QuerySet[Any]:
        page = build().order_by("-created_at", "-id")
        if cur:
            at, pk = cur
            page = page.filter(Q(created_at__lt=at) | Q(created_at=at, id__lt=uuid.UUID(pk)))
        return page[: size + 1]

    rows = fetch(newest_first)
    more_older = len(rows) > size
    rows = rows[:size]
    return Page(
        rows,
        newer=encode_cursor(rows[0]) if rows and cur else None,
        older=encode_cursor(rows[-1]) if rows and more_older else None,
    )


#: The runs list's statements (``list_statement_key`` says what they are a function of).
LIST_STATEMENTS = KeptStatements()


def list_statement_key(
    user: Any, teams: list[TeamRole], filters: Mapping[str, Any] | None, alias: str
) -> Hashable | None:
    """What ``filter_runs`` makes of a list's query for ``user``: the database, the teams
    whose runs they see (a superuser's read by a subquery of their own), and the filters'
    values; None for the stalled view, whose condition is a function of the time as well.
    The cursor and the page size are added by ``keyset_page``."""
    if filters and filters.get("status") == "stalled":
        return None
    if getattr(user, "is_superuser", False):
        who: tuple[Any, ...] = ("superuser", user.pk)
    else:
        who = tuple(sorted(t.id for t in teams if t.holds(VIEW)))
    return (alias, who, tuple(sorted(filters.items())) if filters else None)


def list_context(
    user: Any,
    params: QueryDict,
    *,
    now: datetime | None = None,
    teams: list[TeamRole] | None = None,
) -> dict[str, Any]:
    """The filtered, paged list for ``user`` from the query string ``params`` (``teams``:
    their ``team_roles``, when the caller has read them already)."""
    now = now or timezone.now()
    if teams is None:
        teams = team_roles(user)  # one query answers the page's questions about roles
    state = filter_state(params, teams)
    alias = router.db_for_read(Run)
    key = list_statement_key(user, teams, state.values, alias)
    page = keyset_page(
        lambda: filter_runs(user, state.values, now=now, teams=teams).values_list(
            *LIST_COLUMNS, "team__name", "created_by__username"
        ),
        before=params.get("before", ""),
        after=params.get("after", ""),
        wrap=lambda row: ListedRun(*row),
        kept=(LIST_STATEMENTS, key, alias) if key is not None else None,
    )
    # Rows of teams the user operates get a checkbox for the bulk actions (which check again).
    operable = {t.id for t in teams if t.holds(OPERATE)}
    filters = {k: v for k, v in params.items() if k in RunFilterForm.base_fields and v}
    query = urlencode(filters)
    list_url = path("run-list")

    def link(**extra: str) -> str:
        return f"{list_url}?{urlencode({**filters, **extra})}"

    cursor = {k: params[k] for k in ("before", "after") if params.get(k)}
    return {
        "filter_fields": state.html,
        "rows": list_rows(page.runs, operable=operable, now=now),  # HTML
        "page": page,
        "newer_url": link(after=page.newer) if page.newer else "",
        "older_url": link(before=page.older) if page.older else "",
        "first_url": link() if (page.newer or cursor) else "",
        "query": query,
        "ws_query": urlencode({**filters, **cursor}),
        "poll_url": link(**cursor, poll="1"),
        "may_start": any(t.holds(START) for t in teams),
        "may_operate_any": bool(operable),
        "team_roles": teams,
        "now": now,
        "nav": "runs",
    }


_STATUS_LABELS = dict(RunStatus.choices)


@dataclass(slots=True)
class ListedRun:
    """A run as the list reads it: its columns as plain values rather than a model instance
    (building 50 model instances cost the list a fifth of its time), with what the row's
    views ask of a run. The fields are ``LIST_COLUMNS`` in order, then the annotations."""

    id: uuid.UUID
    team_id: int
    workflow: str
    status: str
    wait_kind: str
    stop_requested: bool
    progress: Any
    idle_deadline_at: datetime | None
    last_activity_at: datetime | None
    lease_expires_at: datetime | None
    limit_usd: Any
    limit_tokens: int | None
    limit_actions: int | None
    limit_wall_seconds: int | None
    spent_usd: Any
    spent_tokens: int
    spent_actions: int
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    team_name: str
    owner: str | None

    budget_figures = Run.budget_figures  # the same figures as the run's page
    budget_usage = Run.budget_usage
    is_stalled = Run.is_stalled
    STALLED_AFTER = Run.STALLED_AFTER
    LEASE_LAPSED_AFTER = Run.LEASE_LAPSED_AFTER

    @property
    def pk(self) -> uuid.UUID:
        return self.id

    def get_status_display(self) -> str:
        return str(_STATUS_LABELS.get(self.status, self.status))


@dataclass(frozen=True, slots=True)
class FilterState:
    """The filter form as the list uses it: the valid values it filters by (none without
    filters; an invalid value is left out, and its error shown at its field) and the
    rendered fields."""

    values: Mapping[str, Any] | None
    html: SafeString


_FILTER_STATES: OrderedDict[tuple, FilterState] = OrderedDict()
_FILTER_STATES_LOCK = threading.Lock()


def filter_state(params: QueryDict, teams: list[TeamRole]) -> FilterState:
    """The filter form for ``params`` and the choices ``teams`` give, validated and rendered
    once per distinct values, choices and time zone in this process. Both are functions of
    those alone, and the list is fetched again and again with the same few filters:
    building, validating and rendering 7 fields and their widgets through templates costs
    about as much as the page's queries."""
    choices = RunFilterForm.choices_for(teams)
    key = (
        tuple((name, params.get(name) or None) for name in RunFilterForm.base_fields),
        tuple(tuple(choices[name]) for name in ("team", "workflow")),
        timezone.get_current_timezone_name(),  # the dates are read in it
    )
    with _FILTER_STATES_LOCK:
        state = _FILTER_STATES.get(key)
        if state is not None:
            _FILTER_STATES.move_to_end(key)
            return state
    form = RunFilterForm(params, user=None, teams=teams)
    values = None
    if RunFilterForm.filters_in(params):
        form.is_valid()  # collects the errors; only valid values filter
        values = MappingProxyType({name: form.value(name) for name in form.fields})
    html = mark_safe(render_to_string("runs/run_list.html#filter-fields", {"form": form}))
    state = FilterState(values, html)
    with _FILTER_STATES_LOCK:
        _FILTER_STATES[key] = state
        while len(_FILTER_STATES) > 512:
            _FILTER_STATES.popitem(last=False)
    return state


_AGE_REFERENCE = datetime(2000, 1, 1, tzinfo=UTC)
_CALENDAR_FREE = timedelta(days=28)


def age(then: datetime, now: datetime, *, language: str | None = None) -> str:
    """``timesince(then, now)``, looked up by whole minutes when that is all it depends on
    (under 28 days no calendar month can be counted); a list shows 50 of them a page, and
    passes the ``language`` read once (reading it costs more than the lookup)."""
    delta = now - then
    if timedelta(0) <= delta < _CALENDAR_FREE:
        return _age_of(int(delta.total_seconds() // 60), language or get_language())
    return timesince(then, now)


@functools.lru_cache(maxsize=8192)
def _age_of(minutes: int, language: str) -> str:
    return timesince(_AGE_REFERENCE - timedelta(minutes=minutes), _AGE_REFERENCE)


def list_rows(runs: list[ListedRun], *, operable: set[int], now: datetime) -> SafeString:
    """The list's table rows, escaped here rather than by the template engine: the list is
    the page people keep open and refresh, and 50 rows of template tags and filters cost
    several times their query. The markup is the template's; every value from a run
    (workflow, team, owner, status, progress, stage) is escaped (``html.escape``, as
    Django's ``escape`` does, without its wrapper for lazy strings), each distinct value once
    a page: a page repeats its teams, owners, workflows, statuses and ages."""
    select = bool(operable)
    if not runs:
        return mark_safe(
            f'<tr><td colspan="{8 if select else 7}" class="empty">No runs match.</td></tr>'
        )
    detail = id_path_format("run-detail")
    out = []
    escaped: dict[str, str] = {}

    def esc(value: str) -> str:
        text = escaped.get(value)
        if text is None:
            text = escaped[value] = html.escape(value)
        return text

    language = get_language()
    for run in runs:
        label, modifier = status_view(run, now=now)
        workflow = esc(run.workflow)
        run_id = str(run.pk)
        short_id = run_id[:8]
        cells = []
        if select:
            box = ""
            if run.team_id in operable:
                box = (
                    f'<input type="checkbox" name="run" value="{run_id}" form="bulk-form" '
                    f'id="select-{run_id}" class="row-select"><label for="select-{run_id}" '
                    f'class="visually-hidden">Select {workflow} {short_id}</label>'
                )
            cells.append(f'<td class="col-select">{box}</td>')
        cells.append(
            f'<td><span class="badge badge-{esc(modifier)}">{esc(label)}</span></td>'
            f'<td><a href="{detail.format(run_id)}" class="run-link">{workflow}</a> '
            f'<span class="mono muted">{short_id}</span></td>'
            f"<td>{esc(run.team_name)}</td>"
            f'<td class="col-owner">{esc(run.owner or "—")}</td>'
        )
        progress = progress_figures(run)
        if progress["percent"] is not None:
            cells.append(
                f'<td><progress max="100" value="{progress["percent"]}" '
                f'aria-label="Progress of {workflow}">{progress["percent"]}%</progress> '
                f'<span class="small">{esc(str(progress["done"]))}/{esc(str(progress["total"]))}'
                "</span></td>"
            )
        elif progress["stage"]:
            cells.append(f'<td><span class="small">{esc(str(progress["stage"]))}</span></td>')
        else:
            cells.append('<td><span class="muted">—</span></td>')
        frac = budget_fraction(run, now=now)
        if frac is not None:
            cells.append(
                f'<td><span class="budget budget-{budget_level(frac)}">{round(100 * frac)}%'
                "</span></td>"
            )
        else:
            cells.append('<td><span class="muted">no limit</span></td>')
        created = run.created_at
        iso = created.isoformat()  # UTC, as the title says: "YYYY-MM-DD HH:MM:SS UTC"
        cells.append(
            f'<td><time datetime="{iso}" title="{iso[:10]} {iso[11:19]} UTC">'
            f"{esc(age(created, now, language=language))}</time></td>"
        )
        out.append(f"<tr>{''.join(cells)}</tr>")
    return mark_safe("\n".join(out))


def render_run_list(user: Any, query_string: str, *, teams: list[TeamRole] | None = None) -> str:
    context = list_context(user, QueryDict(query_string), teams=teams)
    context["oob"] = True
    return render_to_string("runs/run_list.html#runs-table", context).strip()

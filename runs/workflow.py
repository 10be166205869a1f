"""The public authoring API: ``from runs.workflow import workflow``.

    class Input(BaseModel):
        url: str

    @workflow(name="fetch-and-summarise", input=Input, budget={"usd": 1})
    def fetch_and_summarise(ctx, data: Input):
        page = ctx.step("fetch", fetch, data.url, service="web", timeout=30)
        return ctx.step("summarise", summarise, page)

Workflows live in a ``workflows.py`` module of any installed app and are found at start-up
(add your own apps with ``AGENTOPS_APPS``). A workflow must be deterministic between steps:
everything that touches the world goes through ``ctx.step`` so that replay returns its
recorded output instead of doing it again.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from pydantic import BaseModel, ValidationError
from tenacity import RetryCallState, wait_exponential_jitter

from runs.exceptions import InputInvalid, UnknownWorkflow

__all__ = ["BudgetDefaults", "RetryPolicy", "WorkflowDef", "get_workflow", "workflow"]


def _seconds(value: float | timedelta | None) -> float | None:
    if value is None:
        return None
    return value.total_seconds() if isinstance(value, timedelta) else float(value)


@dataclass(frozen=True)
class RetryPolicy:
    """How often a failing step is tried and how long to wait in between.

    Backoff is exponential with jitter (tenacity's math): ``initial * 2**(n-1)`` plus up to
    ``jitter`` seconds, capped at ``maximum``. The waits are durable timers in the database.
    """

    max_attempts: int = 3
    initial: float = 1.0
    maximum: float = 60.0
    jitter: float = 1.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("RetryPolicy.max_attempts must be at least 1")

    def delay(self, attempt: int) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
        wait = wait_exponential_jitter(
            multiplier=self.initial, max=self.maximum, jitter=self.jitter
        )
        state = RetryCallState(None, None, (), {})
        state.attempt_number = attempt
        return float(wait(state))

    def as_dict(self) -> dict[str, Any]:
        return {
            "max_attempts": self.max_attempts,
            "initial": self.initial,
            "maximum": self.maximum,
            "jitter": self.jitter,
        }


@dataclass(frozen=True)
class BudgetDefaults:
    usd: float | None = None
    tokens: int | None = None
    actions: int | None = None
    wall_seconds: int | None = None

    def merged(self, override: dict[str, Any]) -> dict[str, Any]:
        base = {
            "usd": self.usd,
            "tokens": self.tokens,
            "actions": self.actions,
            "wall_seconds": self.wall_seconds,
        }
        base.update({k: v for k, v in override.items() if v is not None})
        return base


@dataclass
class WorkflowDef:
    name: str
    fn: Callable[..., Any]
    version: str = "1"
    input: type[BaseModel] | None = None
    description: str = ""
    budget: BudgetDefaults = field(default_factory=BudgetDefaults)
    deadline: timedelta | None = None
    idle_timeout: timedelta | None = None
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    step_timeout: float | None = None
    queue: str = "runs"
    requires_approval: frozenset[str] = frozenset()
    allow_self_approval: bool = False

    def validate_input(self, raw: Any) -> Any:
        """Return the input as it is stored (JSON); raise ``InputInvalid`` naming the fields."""
        if self.input is None:
            if raw is None:
                return {}
            return raw
        try:
            model = self.input.model_validate({} if raw is None else raw)
        except ValidationError as exc:
            errors = [
                {"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]} for e in exc.errors()
            ]
            raise InputInvalid(self.name, errors) from None
        return model.model_dump(mode="json")

    def parse_input(self, stored: Any) -> Any:
        if self.input is None:
            return stored
        return self.input.model_validate(stored)

    def input_schema(self) -> dict[str, Any]:
        if self.input is None:
            return {"type": "object"}
        return self.input.model_json_schema()


_registry: dict[str, WorkflowDef] = {}


def workflow(
    *,
    name: str,
    version: str = "1",
    input: type[BaseModel] | None = None,
    description: str = "",
    budget: dict[str, Any] | BudgetDefaults | None = None,
    deadline: float | timedelta | None = None,
    idle_timeout: float | timedelta | None = None,
    retry: RetryPolicy | None = None,
    step_timeout: float | timedelta | None = None,
    queue: str = "runs",
    requires_approval: Iterable[str] = (),
    allow_self_approval: bool = False,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register ``fn(ctx, data)`` as workflow ``name``.

    ``budget`` holds the default limits (``usd``, ``tokens``, ``actions``, ``wall_seconds``);
    ``deadline`` and ``idle_timeout`` are seconds or timedeltas; ``retry`` is the default
    policy of its steps and ``step_timeout`` their default timeout. ``queue`` is the Celery
    queue its runs are driven from, so kinds of work can get their own workers.
    ``requires_approval`` names steps that are destructive or visible outside: each gets an
    approval gate before it runs. ``allow_self_approval`` lets the person who started a run
    approve its gates (separation of duties is the default).
    """
    if isinstance(budget, dict):
        unknown = set(budget) - {"usd", "tokens", "actions", "wall_seconds"}
        if unknown:
            raise ValueError(f"workflow {name!r}: unknown budget kind(s) {sorted(unknown)}")
        budget = BudgetDefaults(**budget)

    def register(fn: Callable[..., Any]) -> Callable[..., Any]:
        dl = _seconds(deadline)
        it = _seconds(idle_timeout)
        _registry[name] = WorkflowDef(
            name=name,
            fn=fn,
            version=version,
            input=input,
            description=description or (fn.__doc__ or "").strip().split("\n")[0],
            budget=budget or BudgetDefaults(),
            deadline=timedelta(seconds=dl) if dl else None,
            idle_timeout=timedelta(seconds=it) if it else None,
            retry=retry or RetryPolicy(),
            step_timeout=_seconds(step_timeout),
            queue=queue,
            requires_approval=frozenset(requires_approval),
            allow_self_approval=allow_self_approval,
        )
        fn.workflow_name = name  # type: ignore[attr-defined]
        return fn

    return register


def get_workflow(name: str) -> WorkflowDef:
    try:
        return _registry[name]
    except KeyError:
        raise UnknownWorkflow(name, sorted(_registry)) from None


def all_workflows() -> list[WorkflowDef]:
    return sorted(_registry.values(), key=lambda w: w.name)

"""Request bodies of the API (responses are the run's ``as_dict`` plus links)."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any

from ninja import Schema
from pydantic import ConfigDict, Field

from runs.exceptions import BudgetInvalid

#: Ten years: far beyond any run, and well inside what a ``timedelta`` can hold.
MAX_SECONDS = 10 * 365 * 24 * 3600
#: The largest limits the run's columns hold (a bigger number is a 422, not a database error).
MAX_LIMITS: dict[str, Decimal] = {
    "usd": Decimal("99999999.9999"),
    "tokens": Decimal(2**63 - 1),
    "actions": Decimal(2**31 - 1),
    "wall_seconds": Decimal(2**31 - 1),
}


def check_budget(budget: dict[str, Any] | None) -> None:
    """Refuse limits too large to store; ``Run.start`` checks everything else."""
    for kind, value in (budget or {}).items():
        top = MAX_LIMITS.get(kind)
        if top is None or value is None or isinstance(value, bool):
            continue
        try:
            number = Decimal(str(value))
        except (InvalidOperation, ValueError):
            continue
        if number.is_finite() and number <= top:
            continue
        if number.is_nan():
            continue
        raise BudgetInvalid(f"budget.{kind}: at most {top}, got {value!r}")


class StartIn(Schema):
    model_config = ConfigDict(extra="forbid")

    workflow: str = Field(min_length=1, max_length=100, description="a registered workflow")
    input: Any = Field(None, description="the workflow's input, checked against its schema")
    budget: dict[str, Any] | None = Field(
        None, description="limits: usd, tokens, actions, wall_seconds (default: the workflow's)"
    )
    deadline: float | None = Field(
        None, gt=0, le=MAX_SECONDS, allow_inf_nan=False, description="seconds from now"
    )
    callback_url: str | None = Field(
        None, max_length=2000, description="called when the run finishes (http or https)"
    )
    team: str | None = Field(
        None, max_length=64, description="team slug (default: the token's team)"
    )


class ReasonIn(Schema):
    model_config = ConfigDict(extra="forbid")

    reason: str = Field("", max_length=1000)


class RetryIn(Schema):
    model_config = ConfigDict(extra="forbid")

    from_step: int = Field(ge=1, le=10_000_000, description="the first step to run again")


class SignalIn(Schema):
    model_config = ConfigDict(extra="forbid")

    payload: Any = Field(None, description="delivered to ctx.wait_for_event(name)")


class BudgetIn(Schema):
    model_config = ConfigDict(extra="forbid")

    usd: float | None = Field(None, gt=0, le=99_999_999, allow_inf_nan=False)
    tokens: int | None = Field(None, gt=0, le=2**63 - 1)
    actions: int | None = Field(None, gt=0, le=2**31 - 1)
    wall_seconds: int | None = Field(None, gt=0, le=MAX_SECONDS)

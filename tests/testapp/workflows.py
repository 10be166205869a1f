"""Workflows the tests drive. Module-level switches let a test change behaviour on replay."""

from __future__ import annotations

import time
from typing import Any

from django.db.models import F
from pydantic import BaseModel, Field

from runs.exceptions import PermanentError, RetryableError
from runs.workflow import RetryPolicy, workflow
from tests.testapp.models import Effect

SWITCHES: dict[str, Any] = {}


def apply_effect(key: str, run_id: str, label: str = "", work_ms: int = 0) -> str:
    """An idempotent external side effect: applied once per key, however often asked."""
    if work_ms:
        time.sleep(work_ms / 1000)  # the step's "work", which a crash can interrupt
    _, created = Effect.objects.get_or_create(key=key, defaults={"run_id": run_id, "label": label})
    if not created:
        Effect.objects.filter(key=key).update(calls=F("calls") + 1)
    return key


class StepsInput(BaseModel):
    n: int = Field(default=3, ge=0, le=100_000)
    work_ms: int = Field(default=0, ge=0)


@workflow(name="t-steps", input=StepsInput, retry=RetryPolicy(max_attempts=1))
def steps(ctx: Any, data: StepsInput) -> dict[str, Any]:
    keys = []
    for i in range(data.n):
        key = ctx.idempotency_key()
        keys.append(
            ctx.step(f"effect {i}", apply_effect, key, str(ctx.run_id), f"step {i}", data.work_ms)
        )
        ctx.progress(done=i + 1, total=data.n)
    return {"keys": len(keys)}


def noop() -> None:
    return None


class NoopInput(BaseModel):
    n: int = Field(default=10, ge=0, le=1_000_000)


@workflow(name="t-noop", input=NoopInput)
def noop_workflow(ctx: Any, data: NoopInput) -> int:
    for i in range(data.n):
        ctx.step(f"s{i}", noop)
    return data.n


def flaky(fail_times: int, ctx: Any, kind: str = "retryable") -> str:
    if ctx.attempt <= fail_times:
        if kind == "permanent":
            raise PermanentError(f"permanent failure on attempt {ctx.attempt}")
        raise RetryableError(f"transient failure on attempt {ctx.attempt}")
    return f"ok on attempt {ctx.attempt}"


class FlakyInput(BaseModel):
    fail_times: int = 2
    kind: str = "retryable"
    max_attempts: int = 5


@workflow(name="t-flaky", input=FlakyInput)
def flaky_workflow(ctx: Any, data: FlakyInput) -> str:
    return ctx.step(
        "flaky",
        flaky,
        data.fail_times,
        ctx,
        data.kind,
        retry=RetryPolicy(max_attempts=data.max_attempts, initial=0.01, maximum=0.05, jitter=0),
    )


def record(label: str, run_id: str) -> str:
    return apply_effect(f"{run_id}:{label}", run_id, label)


def undo(output: str) -> str:
    return apply_effect(f"undo:{output}", output.split(":")[0], "undo")


class CompInput(BaseModel):
    steps: int = 2
    then: str = "wait"  # wait | fail


@workflow(name="t-compensate", input=CompInput)
def compensate_workflow(ctx: Any, data: CompInput) -> str:
    for i in range(data.steps):
        ctx.step(f"do {i}", record, f"do{i}", str(ctx.run_id), compensate=undo)
    if data.then == "fail":
        ctx.step("boom", flaky, 99, ctx, "permanent")
    ctx.wait_for_event("go")
    return "done"


class SleepInput(BaseModel):
    seconds: float = 60


@workflow(name="t-sleep", input=SleepInput)
def sleep_workflow(ctx: Any, data: SleepInput) -> str:
    ctx.step("before", noop)
    ctx.sleep("nap", data.seconds)
    ctx.step("after", noop)
    return "rested"


class WaitInput(BaseModel):
    timeout: float | None = None


@workflow(name="t-wait", input=WaitInput)
def wait_workflow(ctx: Any, data: WaitInput) -> Any:
    ctx.step("before", noop)
    payload = ctx.wait_for_event("go", timeout=data.timeout)
    return {"payload": payload}


@workflow(name="t-nondet")
def nondet_workflow(ctx: Any, data: Any) -> str:
    ctx.step("first", noop)
    ctx.step(SWITCHES.get("second_name", "second"), noop)
    ctx.sleep("pause", 60)
    return "done"


class Opaque:
    pass


@workflow(name="t-bad-output")
def bad_output(ctx: Any, data: Any) -> Any:
    return ctx.step("opaque", Opaque)


def spend(ctx: Any, usd: float, tokens: int) -> str:
    ctx.usage(usd=usd, tokens=tokens)
    return "spent"


class SpendInput(BaseModel):
    n: int = 10
    usd: float = 0.1
    tokens: int = 100


@workflow(name="t-spend", input=SpendInput)
def spend_workflow(ctx: Any, data: SpendInput) -> str:
    for i in range(data.n):
        ctx.step(f"spend {i}", spend, ctx, data.usd, data.tokens)
        ctx.set_partial_result({"done": i + 1})
    return "all spent"


def slow(seconds: float) -> str:
    time.sleep(seconds)
    return "slow done"


@workflow(name="t-timeout", retry=RetryPolicy(max_attempts=2, initial=0.01, jitter=0))
def timeout_workflow(ctx: Any, data: Any) -> str:
    return ctx.step("slow", slow, 5, timeout=0.2)


def down(url: str) -> str:
    err = RetryableError(f"{url} answered 503")
    err.status_code = 503  # type: ignore[attr-defined]
    raise err


def backup(url: str) -> str:
    return "from backup"


class BreakerInput(BaseModel):
    fallback: bool = False


@workflow(
    name="t-breaker",
    input=BreakerInput,
    retry=RetryPolicy(max_attempts=3, initial=0.01, maximum=0.02, jitter=0),
)
def breaker_workflow(ctx: Any, data: BreakerInput) -> str:
    return ctx.step(
        "call", down, "http://svc", service="t-svc", fallback=backup if data.fallback else None
    )


@workflow(name="t-deadline", deadline=3600, idle_timeout=600)
def deadline_workflow(ctx: Any, data: Any) -> str:
    ctx.step("one", noop, compensate=lambda out: None)
    ctx.sleep("long", 7200)
    return "late"


@workflow(name="t-secret")
def secret_workflow(ctx: Any, data: Any) -> Any:
    return ctx.step("leak", lambda: {"api_key": "sk-live-123", "tokens": 5, "ok": True})


def operator_meddles(run_id: str) -> str:
    """An operator acts on the run while its worker is in this step: the worker's cached
    audit-chain head is stale when it writes this step's checkpoint."""
    from runs.models import Run

    Run.objects.get(pk=run_id).raise_budget(actor="user:lead", usd=100)
    return "meddled"


@workflow(name="t-interleave")
def interleave_workflow(ctx: Any, data: Any) -> str:
    ctx.step("first", noop)
    ctx.step("meddle", operator_meddles, str(ctx.run_id))
    ctx.step("last", noop)
    return "ok"


@workflow(name="t-dberror")
def dberror_workflow(ctx: Any, data: Any) -> str:
    ctx.step("first", noop)
    if SWITCHES.get("db_down"):
        from django.db import connection

        with connection.cursor() as cur:
            cur.execute("SELECT * FROM no_such_table_the_database_is_unwell")
    ctx.step("second", noop)
    return "ok"


def flaky_undo(output: str) -> str:
    """A compensation that fails once (retryably) before it works, applied idempotently."""
    key = f"undo:{output}"
    if not Effect.objects.filter(key=f"tried:{key}").exists():
        Effect.objects.create(key=f"tried:{key}", run_id=output.split(":")[0], label="tried")
        raise RetryableError("compensation target busy")
    return apply_effect(key, output.split(":")[0], "undo")


class CompRetryInput(BaseModel):
    steps: int = 2


@workflow(name="t-compensate-retry", retry=RetryPolicy(max_attempts=3, initial=0.01, jitter=0))
def compensate_retry_workflow(ctx: Any, data: CompRetryInput | None = None) -> str:
    for i in range(2):
        ctx.step(f"do {i}", record, f"do{i}", str(ctx.run_id), compensate=flaky_undo)
    ctx.wait_for_event("go")
    return "done"


def charged_then_throttled(ctx: Any) -> str:
    ctx.usage(usd=1, tokens=10)
    if ctx.attempt < 3:
        err = RetryableError("429 after the tokens were billed")
        err.status_code = 429  # type: ignore[attr-defined]
        raise err
    return "ok"


@workflow(name="t-billed-retries", retry=RetryPolicy(max_attempts=3, initial=0.01, jitter=0))
def billed_retries_workflow(ctx: Any, data: Any) -> str:
    return ctx.step("call", charged_then_throttled, ctx)


@workflow(name="t-nul")
def nul_workflow(ctx: Any, data: Any) -> str:
    return ctx.step("scrape", lambda: "before\x00after")


class ApproveInput(BaseModel):
    quorum: int = Field(default=1, ge=1, le=5)
    deadline: float | None = None
    on_timeout: str = "reject"
    approvers: list[str] | None = None
    escalate_to: list[str] | None = None
    escalate_after: float | None = None
    allow_self: bool = False
    work_ms: int = Field(default=0, ge=0)


@workflow(name="t-approve", input=ApproveInput)
def approve_then_act(ctx: Any, data: ApproveInput) -> dict[str, Any]:
    """A gate, then the side effect it guards: applied once, only when approved."""
    decision = ctx.approval(
        "publish",
        payload={"title": "Weekly report", "to": "all@example.com"},
        editable=["title"],
        quorum=data.quorum,
        deadline=data.deadline,
        on_timeout=data.on_timeout,
        approvers=data.approvers,
        escalate_to=data.escalate_to,
        escalate_after=data.escalate_after,
        allow_self_approval=data.allow_self,
    )
    if decision.approved:
        key = ctx.idempotency_key()
        ctx.step(
            "publish", apply_effect, key, str(ctx.run_id), decision.payload["title"], data.work_ms
        )
    return {
        "outcome": decision.outcome,
        "title": decision.payload["title"],
        "reviewers": [r["user"] for r in decision.reviewers],
        "comment": decision.comment,
        "timed_out": decision.timed_out,
    }


@workflow(name="t-gated-step", requires_approval=["delete"])
def gated_step(ctx: Any, data: Any) -> str:
    """A destructive step named in the workflow's policy: it cannot run without approval."""
    key = ctx.idempotency_key()
    return ctx.step("delete", apply_effect, key, str(ctx.run_id), "deleted", 0)

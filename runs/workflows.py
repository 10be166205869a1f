"""Demo workflows that do real work offline, so the embedded console shows something alive.

- ``digest``: reads a local corpus (by default the Python standard library's own source), one
  file per step, with progress, usage accounting, a per-run budget and a report as result.
- ``flaky-service``: calls a local HTTP service that fails transiently, showing retries with
  backoff, the shared circuit breaker and a fallback provider.
- ``nap``: a durable sleep between two steps.
"""

from __future__ import annotations

import ast
import json
import sysconfig
import urllib.error
import urllib.parse
import urllib.request
from decimal import Decimal
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from runs.workflow import RetryPolicy, workflow

#: A made-up price, so budgets have something to count: dollars per 1,000 "tokens".
PRICE_PER_1K_TOKENS = Decimal("0.002")


class DigestInput(BaseModel):
    corpus: str = Field(
        default="", description="Directory to read; empty means the Python standard library."
    )
    pattern: str = Field(default="*.py", description="Glob of the files to read.")
    limit: int = Field(default=25, ge=1, le=2000, description="How many files to read.")


def list_files(corpus: str, pattern: str, limit: int) -> list[str]:
    root = Path(corpus or sysconfig.get_paths()["stdlib"])
    if not root.is_dir():
        raise FileNotFoundError(f"corpus {root} is not a directory")
    files = sorted(p for p in root.glob(pattern) if p.is_file())
    return [str(p) for p in files[:limit]]


def summarise_file(path: str, ctx: Any) -> dict[str, Any]:
    text = Path(path).read_text(encoding="utf-8", errors="replace")
    tokens = max(1, len(text) // 4)
    ctx.usage(tokens=tokens, usd=(PRICE_PER_1K_TOKENS * tokens / 1000).quantize(Decimal("1e-6")))
    summary: dict[str, Any] = {"file": Path(path).name, "lines": text.count("\n") + 1}
    try:
        tree = ast.parse(text)
    except SyntaxError:
        return {**summary, "parsed": False}
    doc = ast.get_docstring(tree) or ""
    summary.update(
        parsed=True,
        functions=sum(isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef) for n in tree.body),
        classes=sum(isinstance(n, ast.ClassDef) for n in tree.body),
        doc=doc.strip().split("\n")[0][:200],
    )
    return summary


@workflow(
    name="digest",
    input=DigestInput,
    description="Read a local corpus one file per step and report on it.",
    budget={"usd": 1.0, "actions": 2500},
    deadline=6 * 3600,
    idle_timeout=900,
)
def digest(ctx: Any, data: DigestInput) -> dict[str, Any]:
    files = ctx.step("list files", list_files, data.corpus, data.pattern, data.limit)
    ctx.progress(done=0, total=len(files), stage="reading")
    summaries = []
    for i, path in enumerate(files, start=1):
        summaries.append(ctx.step(f"read {Path(path).name}", summarise_file, path, ctx))
        ctx.progress(done=i, total=len(files), message=Path(path).name)
        if i % 10 == 0:
            ctx.set_partial_result({"files_read": i, "of": len(files)})
    ctx.progress(stage="reporting")
    biggest = sorted(summaries, key=lambda s: s["lines"], reverse=True)[:5]
    return {
        "files": len(summaries),
        "lines": sum(s["lines"] for s in summaries),
        "functions": sum(s.get("functions", 0) for s in summaries),
        "classes": sum(s.get("classes", 0) for s in summaries),
        "largest": [{"file": s["file"], "lines": s["lines"]} for s in biggest],
        "undocumented": [s["file"] for s in summaries if s.get("parsed") and not s.get("doc")],
    }


class FlakyInput(BaseModel):
    url: str = Field(
        default="http://127.0.0.1:8000/demo/flaky",
        description="The local service to call (the embedded server hosts one).",
    )
    calls: int = Field(default=5, ge=1, le=100)
    fail_first: int = Field(
        default=2, ge=0, le=20, description="How many times each call fails before it works."
    )


def call_service(url: str, key: str, fail_first: int) -> dict[str, Any]:
    query = urllib.parse.urlencode({"key": key, "fail_first": fail_first})
    with urllib.request.urlopen(f"{url}?{query}", timeout=5) as resp:
        return json.loads(resp.read().decode())


def cached_answer(url: str, key: str, fail_first: int) -> dict[str, Any]:
    return {"key": key, "source": "fallback cache"}


@workflow(
    name="flaky-service",
    input=FlakyInput,
    description="Call a transiently failing local service: retries, backoff, circuit breaker.",
    retry=RetryPolicy(max_attempts=4, initial=0.5, maximum=5, jitter=0.5),
    step_timeout=10,
)
def flaky_service(ctx: Any, data: FlakyInput) -> dict[str, Any]:
    answers = []
    for i in range(data.calls):
        answers.append(
            ctx.step(
                f"call {i + 1}",
                call_service,
                data.url,
                ctx.idempotency_key(),
                data.fail_first,
                service="demo-flaky",
                fallback=cached_answer,
            )
        )
        ctx.progress(done=i + 1, total=data.calls, stage="calling")
    return {
        "answers": answers,
        "from_fallback": sum(a.get("source") == "fallback cache" for a in answers),
    }


class NapInput(BaseModel):
    seconds: float = Field(default=30, gt=0, le=7 * 24 * 3600)


def now_iso() -> str:
    from django.utils import timezone

    return timezone.now().isoformat()


@workflow(name="nap", input=NapInput, description="A durable sleep between two steps.")
def nap(ctx: Any, data: NapInput) -> dict[str, Any]:
    before = ctx.step("before", now_iso)
    ctx.progress(stage="sleeping", message=f"{data.seconds:g}s")
    ctx.sleep("nap", data.seconds)
    after = ctx.step("after", now_iso)
    return {"slept_from": before, "woke_at": after}

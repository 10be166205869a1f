"""The console benchmark's live-update measurements: a real worker drives a ``bench-ticker``
run while WebSocket viewers (``bench/console_clients.py``, in client processes of their own)
watch its page; per step, the time from ``Step.finished_at`` to each viewer's message
arriving in its socket (and, reported beside it, to the client reading it).

The first viewer has a client process to itself, so a crowd of viewers in the other process
cannot delay its receiving; both processes report when each step first showed up.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.common import percentile

ROOT = Path(__file__).resolve().parent.parent
CONSOLE = ROOT / "bench" / "console.py"


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def figures(values: list[float]) -> dict[str, float]:
    if not values:
        return {"n": 0, "p50": float("nan"), "p95": float("nan"), "max": float("nan")}
    return {
        "n": len(values),
        "p50": percentile(values, 50),
        "p95": percentile(values, 95),
        "max": max(values),
    }


def start_ticker(ticks: int, interval: float) -> Any:
    """A run of ``bench-ticker`` in team alpha, parked on its ``go`` signal after enough
    steps that its page is at its full size (the latest ``STEPS_SHOWN`` steps and events):
    every measured push renders the same page, as it does for a run of hours."""
    from django.contrib.auth.models import User

    from bench.common import wait_until
    from runs.models import Run
    from runs.run_page import STEPS_SHOWN

    lead = User.objects.get(username="lead-00")
    run, _ = Run.start(
        "bench-ticker",
        {"n": ticks, "interval": interval, "warm": STEPS_SHOWN},
        team="alpha",
        actor="user:lead-00",
        user=lead,
    )
    wait_until(
        lambda: Run.objects.filter(pk=run.pk, status="waiting", wait_kind="event").exists(),
        timeout=60,
        what="the ticker to wait for its signal",
    )
    return run


def pin(pid: int, cpus: set[int]) -> None:
    """Keep every thread of process ``pid`` (and those it starts later) on ``cpus``."""
    for tid in os.listdir(f"/proc/{pid}/task"):
        os.sched_setaffinity(int(tid), cpus)


def spawn_viewers(
    params: dict[str, Any], workdir: Path, name: str, cpus: set[int] | None = None
) -> tuple[subprocess.Popen, Path]:
    out = workdir / f"viewers-{name}.json"
    proc = subprocess.Popen(
        [
            sys.executable,
            str(CONSOLE),
            "--viewers",
            json.dumps(params),
            "--out",
            str(out),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=(workdir / f"viewers-{name}.log").open("ab"),
        text=True,
        cwd=str(ROOT),
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        preexec_fn=(lambda: os.sched_setaffinity(0, cpus)) if cpus else None,
    )
    return proc, out


def wait_line(proc: subprocess.Popen, word: str, timeout: float) -> str | None:
    """The next line from the viewers process starting with ``word``; None if it exited."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return None
        ready, _, _ = select.select([proc.stdout], [], [], 0.5)
        if ready:
            line = proc.stdout.readline()
            if line.startswith(word):
                return line
    raise TimeoutError(f"viewers did not say {word!r} in time")


def wait_ready(proc: subprocess.Popen, timeout: float) -> float:
    line = wait_line(proc, "ready", timeout)
    if line is None:
        raise RuntimeError(f"viewers exited with {proc.returncode} before connecting")
    return float(line.split()[2])


def watch(
    port: int,
    cookies: list[str],
    workdir: Path,
    *,
    viewers: int,
    ticks: int,
    interval: float,
    name: str,
    fanout_timeout: float = 180.0,
    crowd_processes: int = 1,
    client_cpus: set[int] | None = None,
) -> dict[str, Any]:
    """``viewers`` WebSockets on one run's page while a worker runs its ``ticks`` steps; per
    step, receive time - ``Step.finished_at``. The first and (with more than two) the last
    to connect have client processes of their own; the rest share ``crowd_processes``."""
    from bench.common import wait_until
    from runs.models import Run, Step

    run = start_ticker(ticks, interval)
    url = f"ws://127.0.0.1:{port}/ws/runs/{run.pk}/"
    origin = f"http://127.0.0.1:{port}"
    # The server hands a change to a run's viewers in the order they connected: the first
    # probe is served first, the last probe (connected after the crowd) last. Each has a
    # client process of its own, so the crowd's receiving cannot delay theirs.
    groups = [("probe", 1, cookies[:1])]
    crowd = viewers - 2 if viewers > 2 else viewers - 1
    per_process = -(-crowd // crowd_processes) if crowd else 0
    for i in range(crowd_processes):
        count = min(per_process, crowd - i * per_process)
        if count > 0:
            groups.append((f"crowd{i}", count, cookies[1:] or cookies))
    if viewers > 2:
        groups.append(("last-probe", 1, cookies[:1]))
    procs = []
    connect_s = {}
    try:
        for group, count, group_cookies in groups:
            params = {
                "url": url,
                "origin": origin,
                "cookies": group_cookies,
                "count": count,
                "ticks": ticks,
            }
            proc, out = spawn_viewers(params, workdir, f"{name}-{group}", client_cpus)
            procs.append((group, proc, out))
            connect_s[group] = wait_ready(proc, timeout=300)
        _log(f"[live {name}] {viewers} viewer(s) connected ({connect_s})")
        run.signal("go", actor="user:lead-00")
        wait_until(
            lambda: Run.objects.filter(pk=run.pk, status="succeeded").exists(),
            timeout=ticks * interval * 4 + 120,
            every=0.2,
            what="the ticker to finish",
        )
        # A crowd that is behind is still receiving: each viewer process says "seen" once
        # all its viewers have seen the last step, and all hang up together when told to
        # stop (after ``fanout_timeout`` at the latest).
        deadline = time.monotonic() + fanout_timeout
        for _, proc, _ in procs:
            with contextlib.suppress(TimeoutError):
                wait_line(proc, "seen", max(deadline - time.monotonic(), 0.1))
    finally:
        for _, proc, _ in procs:
            if proc.poll() is None:
                try:
                    proc.stdin.write("stop\n")
                    proc.stdin.flush()
                except BrokenPipeError:
                    pass
        for _, proc, _ in procs:
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
    steps = Step.objects.filter(run=run, name__startswith="tick-")
    finished = {
        int(step_name.split("-")[1]): at.timestamp()
        for step_name, at in steps.values_list("name", "finished_at")
    }
    result: dict[str, Any] = {"viewers": viewers, "ticks": ticks, "connect_s": connect_s}
    everyone: list[float] = []
    everyone_read: list[float] = []  # as the bench's clients got round to reading them
    last_viewer: dict[int, float] = {}
    missed = 0
    for group, _, out in procs:
        data = json.loads(out.read_text())
        result.setdefault("failures", []).extend(data["failures"])
        result["failed"] = result.get("failed", 0) + data["failed"]
        result["connected"] = result.get("connected", 0) + data["connected"]
        result["unstamped"] = result.get("unstamped", 0) + data["unstamped"]
        if group.startswith("crowd"):
            result["crowd_cpu_s"] = result.get("crowd_cpu_s", 0.0) + data.get("cpu_s", 0.0)
        mine: list[float] = []
        for record, reads in zip(data["firsts"], data["reads"], strict=True):
            for tick, at in finished.items():
                got = record.get(str(tick))
                if got is None:
                    missed += 1
                    continue
                ms = (got - at) * 1000
                mine.append(ms)
                everyone_read.append((reads[str(tick)] - at) * 1000)
                last_viewer[tick] = max(last_viewer.get(tick, 0.0), ms)
        everyone.extend(mine)
        if group in ("probe", "last-probe"):
            result[group.replace("-", "_")] = figures(mine)
    result["all"] = figures(everyone)
    result["all_read"] = figures(everyone_read)
    result["last_viewer"] = figures(list(last_viewer.values()))
    result["missed"] = missed
    probe = result["probe"]
    _log(
        f"[live {name}] first viewer p50 {probe['p50']:.1f} ms p95 {probe['p95']:.1f} ms; "
        f"last viewer p95 {result.get('last_probe', probe)['p95']:.1f} ms; "
        f"all viewers p95 {result['all']['p95']:.1f} ms (as read "
        f"{result['all_read']['p95']:.1f} ms); missed {missed}"
    )
    return result

"""Benchmark of the run engine against its peers, printed as a table of figures and ratios.

    .venv/bin/python -m tests.servers --durable .venv/bin/python bench/engine.py [--quick]

(``make bench``, or ``make bench BENCH_ARGS=--quick``, does exactly that.)
``tests.servers --durable`` starts a throwaway
PostgreSQL with fsync on and a Redis, and passes their URLs in ``AGENTOPS_TEST_PG_URL`` /
``AGENTOPS_TEST_REDIS_URL``. Every figure below comes from that one PostgreSQL and Redis:

1. ours: per-step overhead of a no-op workflow of 1,000 and 10,000 steps, driven in-process
   with ``runs.engine.drive`` on PostgreSQL and on SQLite (WAL), and the 10k/1k ratio; where
   one step's time goes (statements, commits, Python) and what a replay costs;
2. peers: the same n durable no-op steps in DBOS Transact and in LangGraph (PostgresSaver),
   with write transactions and WAL bytes per step for every PostgreSQL contender;
3. the floor: a single-row INSERT + COMMIT with psycopg;
4. raw Celery no-op tasks through Redis with a real worker, and our submit-to-first-step
   latency with a real worker (``celery -A agentops worker``), as shipped and with
   ``CELERY_DB_REUSE_MAX`` (``bench/settings_reuse.py``);
5. 10,000 runs waiting on a durable timer: leases held, messages queued, worker tasks busy,
   the plan and time of the timers sweep.

Each part runs in its own process (``--phase``), since Django settings, DBOS and Celery keep
global state. ``--quick`` runs smaller sizes (under two minutes on two cores).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
# Run as a script, Python puts bench/ first on sys.path; the phases import ``bench.*``.
if sys.path and Path(sys.path[0]).resolve() == ROOT / "bench":
    sys.path[0] = str(ROOT)
elif str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

FULL: dict[str, Any] = {
    "sizes": [1000, 10000],
    "warmup": 50,
    "celery_tasks": 5000,
    "samples": 50,
    "waiting": 10000,
    "observe_s": 12.0,
    "concurrency": 8,
    "fill_timeout": 420.0,
}
QUICK: dict[str, Any] = {
    **FULL,
    "sizes": [100, 1000],
    "warmup": 20,
    "celery_tasks": 1000,
    "samples": 20,
    "waiting": 1000,
    "observe_s": 6.0,
    "fill_timeout": 120.0,
}
TARGETS = {"vs_peer": 1.0, "vs_floor": 5.0, "growth": 1.2, "first_ms": 25.0}


# ============================================================================ phases (children)
def run_phase(name: str, p: dict[str, Any]) -> dict[str, Any]:
    if name == "ours":
        from bench import ours

        return ours.run(p["db"], p["sizes"], warmup=p["warmup"], label=p["label"])
    if name == "profile":
        from bench import ours

        return ours.run_profile(p["db"], p["n"])
    if name == "dbos":
        from bench import peer_dbos

        return peer_dbos.run(p["db"], p["sizes"], warmup=p["warmup"])
    if name == "langgraph":
        from bench import peers

        return peers.run_langgraph(p["db"], p["sizes"], warmup=p["warmup"])
    if name == "floor":
        from bench import peers

        return peers.run_floor(p["db"], p["n"])
    if name == "celery":
        from bench import peers

        return peers.run_celery_raw(
            p["broker"],
            Path(p["workdir"]),
            tasks=p["tasks"],
            samples=p["samples"],
            concurrency=p["concurrency"],
        )
    if name == "distributed":
        from bench import distributed

        return distributed.run(
            p["db"],
            p["broker"],
            Path(p["workdir"]),
            samples=p["samples"],
            waiting=p["waiting"],
            concurrency=p["concurrency"],
            observe_s=p["observe_s"],
            fill_timeout=p["fill_timeout"],
        )
    raise SystemExit(f"unknown phase {name!r}")


def spawn(name: str, params: dict[str, Any], *, timeout: float) -> dict[str, Any]:
    """Run one phase in a child process; its progress goes to stderr, its figures come back."""
    fd, out = tempfile.mkstemp(prefix=f"bench-{name}-", suffix=".json")
    os.close(fd)
    cmd = [sys.executable, str(Path(__file__).resolve()), "--phase", name, "--out", out]
    cmd += ["--params", json.dumps(params)]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    t0 = time.perf_counter()
    try:
        rc = subprocess.run(
            cmd, env=env, cwd=str(ROOT), stdout=sys.stderr.fileno(), timeout=timeout, check=False
        ).returncode
        text = Path(out).read_text()
        if rc != 0 or not text:
            return {"error": f"phase {name} exited with {rc}"}
        result = json.loads(text)
    except subprocess.TimeoutExpired:
        return {"error": f"phase {name} took longer than {timeout:g}s"}
    finally:
        Path(out).unlink(missing_ok=True)
    result["phase_s"] = time.perf_counter() - t0
    return result


# ============================================================================ the table
def _us(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f} us"


def _num(value: float | None, digits: int = 0) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def _x(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def _per_step(res: dict[str, Any], n: int) -> float | None:
    item = res.get("sizes", {}).get(str(n))
    return item["per_step_us"] if item else None


def _growth(res: dict[str, Any], small: int, large: int) -> float | None:
    a, b = _per_step(res, small), _per_step(res, large)
    return b / a if a and b else None


def _verdict(ok: bool | None) -> str:
    return "n/a" if ok is None else ("met" if ok else "MISSED")


def render(results: dict[str, Any], cfg: dict[str, Any], *, quick: bool) -> str:
    small, large = cfg["sizes"]
    lines: list[str] = []
    add = lines.append
    floor = results.get("floor", {})
    pg = floor.get("pg", {})
    ours_pg = results.get("ours_pg", {})
    celery = results.get("celery", {})
    dist = results.get("distributed", {})
    add("")
    add(f"agentops engine benchmark ({'quick' if quick else 'full'})")
    add(
        f"PostgreSQL {pg.get('server_version', '?')} (fsync={pg.get('fsync', '?')}, "
        f"synchronous_commit={pg.get('synchronous_commit', '?')}); SQLite WAL "
        f"(synchronous=NORMAL: no fsync per commit); Redis; {os.cpu_count()} CPUs"
    )
    for name, res in results.items():
        if "error" in res:
            add(f"!! {name}: {res['error']}")

    # ------------------------------------------------------------------ 1-3
    add("")
    add("1-3. Per-step overhead of n durable no-op steps: wall time / n")
    add(f"     (n={small:,}: median of 3 runs; n={large:,}: one run)")
    add(
        f"  {'':36}{f'n={small:,}':>12}{f'n={large:,}':>12}{'large/small':>13}"
        f"{'write txns':>12}{'WAL bytes':>11}"
    )
    add(f"  {'':73}{'per step':>12}{'per step':>11}")
    dbos, lg = results.get("dbos", {}), results.get("langgraph", {})
    rows = [
        ("ours, PostgreSQL", ours_pg),
        ("ours, SQLite WAL", results.get("ours_sqlite", {})),
        (f"DBOS {dbos.get('version', '')}, PostgreSQL", dbos),
        (f"LangGraph {lg.get('version', '')}, PostgresSaver sync", lg),
    ]
    for label, res in rows:
        big = res.get("sizes", {}).get(str(large), {})
        add(
            f"  {label:36}{_us(_per_step(res, small)):>12}{_us(_per_step(res, large)):>12}"
            f"{_x(_growth(res, small, large)):>13}"
            f"{_num(big.get('write_xacts_per_step'), 2):>12}"
            f"{_num(big.get('wal_bytes_per_step')):>11}"
        )
    add(
        f"  {'floor: INSERT+COMMIT, psycopg':36}{'':12}{_us(floor.get('per_commit_us')):>12}"
        f"{'':13}{_num(floor.get('write_xacts_per_step'), 2):>12}"
        f"{_num(floor.get('wal_bytes_per_step')):>11}"
    )
    q = ours_pg.get("queries")
    if q:
        add("")
        add(
            f"  One step of ours on PostgreSQL (separate {q['n']}-step run, timed around the "
            f"driver: {q['per_step_us']:,.0f} us/step):"
        )
        for kind, f in q["by_kind"].items():
            add(
                f"    {kind:26}{f['per_step']:5.2f} x {f['us_each']:5.0f} us"
                f" = {f['per_step'] * f['us_each']:6.0f} us"
            )
        add(
            f"    {'Python outside the driver':26}{'':17}{q['python_us_per_step']:6.0f} us"
            "  (ORM, engine, hashing, JSON)"
        )
        add(
            f"    = {q['statements_per_step']:.1f} statements + {q['commits_per_step']:.2f} "
            f"commits per step; {q['db_share'] * 100:.0f}% of the time in the driver"
        )
    if "replay" in ours_pg:
        rp = ours_pg["replay"]
        add(
            f"  Replay of the {rp['steps']:,}-step run (paid by a recovery or the next slice): "
            f"load {rp['load_s'] * 1000:.0f} ms + replay {rp['replay_s'] * 1000:.0f} ms = "
            f"{(rp['load_s'] + rp['replay_s']) / max(rp['steps'], 1) * 1e6:.1f} us/step"
        )

    # ------------------------------------------------------------------ 4
    if celery or dist:
        add("")
        add(f"4. Distributed: a real `celery worker -P threads -c {cfg['concurrency']}` on Redis")
    if celery and "error" not in celery:
        add(
            f"  raw Celery no-op: {celery['tasks']:,} tasks in {celery['total_s']:.2f} s = "
            f"{celery['tasks_per_s']:,.0f} tasks/s ({_us(celery['per_task_us'])}/task); "
            f"send->start p50 {celery['latency_ms']['p50']:.2f} ms, "
            f"p95 {celery['latency_ms']['p95']:.2f} ms"
        )
    for key, label in (("latency", "as shipped"), ("latency_reuse", "CELERY_DB_REUSE_MAX=1000")):
        lat = dist.get(key)
        if not lat:
            continue
        fs, ls, e2e = lat["first_step_ms"], lat["lease_ms"], lat["end_to_end_ms"]
        add(
            f"  ours submit->first step, {label} ({lat['n']} runs one at a time): "
            f"p50 {fs['p50']:.2f} ms, p95 {fs['p95']:.2f} ms, max {fs['max']:.2f} ms"
        )
        add(
            f"    submit->lease p50 {ls['p50']:.2f} ms; submit->succeeded (seen by polling) "
            f"p50 {e2e['p50']:.2f} ms"
        )

    # ------------------------------------------------------------------ 5
    fill = dist.get("fill")
    held = dist.get("held", {})
    obs = dist.get("observe", {})
    ex = dist.get("explain", {})
    if fill:
        sw = dist["sweeps"]
        add("")
        add(f"5. {fill['count']:,} runs waiting on a one-hour durable timer")
        add(
            f"  driven to `waiting` by the worker in {fill['seconds']:.1f} s "
            f"({fill['count'] / fill['seconds']:,.0f} runs/s, submitted from 8 threads in "
            f"{fill['submit_s']:.1f} s); statuses {fill['statuses']}"
        )
        add(
            f"  worker CPU per run (start -> lease -> sleep checkpoint -> waiting): "
            f"{fill['worker_cpu_ms_per_run']:.1f} ms"
        )
        add(
            f"  leases held: {held['leased']}; runs `running`: {held['running']}; worker tasks "
            f"executing: {dist.get('active_tasks', 'n/a')}"
        )
        add(
            f"  Redis, {obs['samples']} samples while beat ran ({dist['beat_sent']} sweeps sent): "
            f"max runs={obs['max']['runs']} sweeps={obs['max']['sweeps']} "
            f"unacked={obs['max']['unacked']}; at the end runs={obs['final']['runs']} "
            f"sweeps={obs['final']['sweeps']} unacked={obs['final']['unacked']}"
        )
        add(
            f"  timers sweep: {sw['timers_ms_median']:.2f} ms (median of 5; first "
            f"{sw['timers_ms_first']:.2f} ms; woke {sw['timers_woken']}); index run_due_timers "
            f"used: {ex['uses_index']} (before ANALYZE: {ex['uses_index_before_analyze']})"
        )
        add(
            f"  other sweeps, once: leases {sw['leases_ms']:.2f} ms, orphans "
            f"{sw['orphans_ms']:.2f} ms, deadlines {sw['deadlines_ms']:.2f} ms"
        )
        add("  EXPLAIN (ANALYZE, BUFFERS) of the timers sweep's own query:")
        lines.extend("    " + row for row in ex["plan"].splitlines())

    # ------------------------------------------------------------------ targets
    checks = _checks(results, small, large)
    add("")
    add("Targets")
    width = max((len(c[0]) for c in checks), default=10) + 2
    for label, value, target, ok in checks:
        add(f"  {label:{width}}{value:>12}   target {target:8} {_verdict(ok)}")
    missed = [c[0] for c in checks if c[3] is False]
    add("")
    add("Missed: " + ("; ".join(missed) if missed else "none"))
    prof = results.get("profile", {})
    if "text" in prof:
        add("")
        add("Where our per-step time goes (cProfile; ours is slower than the faster peer):")
        lines.extend("  " + row for row in prof["text"].splitlines())
    return "\n".join(lines)


def _checks(
    results: dict[str, Any], small: int, large: int
) -> list[tuple[str, str, str, bool | None]]:
    """(what, measured, target, met) for each target of the benchmark."""
    checks: list[tuple[str, str, str, bool | None]] = []
    ours_pg = results.get("ours_pg", {})
    floor = results.get("floor", {})
    dist = results.get("distributed", {})
    ours_large = _per_step(ours_pg, large)
    peers = {k: v for k in ("dbos", "langgraph") if (v := _per_step(results.get(k, {}), large))}
    if ours_large and peers:
        best = min(peers, key=lambda k: peers[k])
        r = ours_large / peers[best]
        checks.append(
            (f"ours / {best} (faster peer), n={large:,}", _x(r), "<= 1.0x", r <= TARGETS["vs_peer"])
        )
        for other, figure in peers.items():
            if other != best:
                r2 = ours_large / figure
                checks.append((f"ours / {other}, n={large:,} (info)", _x(r2), "", None))
    if ours_large and floor.get("per_commit_us"):
        r = ours_large / floor["per_commit_us"]
        checks.append(("ours / floor (INSERT+COMMIT)", _x(r), "<= 5x", r <= TARGETS["vs_floor"]))
    for key, label in (("ours_pg", "PostgreSQL"), ("ours_sqlite", "SQLite")):
        g = _growth(results.get(key, {}), small, large)
        if g:
            checks.append(
                (
                    f"ours per step {large:,} / {small:,}, {label}",
                    _x(g),
                    "<= 1.2x",
                    g <= TARGETS["growth"],
                )
            )
    lat = dist.get("latency")
    if lat:
        p50 = lat["first_step_ms"]["p50"]
        checks.append(
            ("submit->first step p50", f"{p50:.2f} ms", "< 25 ms", p50 < TARGETS["first_ms"])
        )
    fill = dist.get("fill")
    if fill:
        held, obs, ex = dist["held"], dist["observe"], dist["explain"]
        active = dist.get("active_tasks")
        workers = held["leased"] + (active or 0)
        msgs = obs["max"]["runs"] + obs["final"]["sweeps"] + obs["final"]["unacked"]
        checks.append(
            (
                f"{fill['count']:,} waiting runs: held workers / messages",
                f"{workers} / {msgs}",
                "0 / 0",
                workers == 0 and msgs == 0 and active is not None,
            )
        )
        checks.append(
            ("timers sweep uses run_due_timers", str(ex["uses_index"]), "True", ex["uses_index"])
        )
    return checks


# ============================================================================ orchestration
def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="smaller sizes (under two minutes)")
    ap.add_argument("--profile", action="store_true", help="always print the cProfile")
    ap.add_argument("--skip", default="", help="comma-separated phases to skip")
    ap.add_argument("--json", help="also write all figures to this file")
    ap.add_argument("--phase", help=argparse.SUPPRESS)
    ap.add_argument("--params", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.phase:
        result = run_phase(args.phase, json.loads(args.params or "{}"))
        Path(args.out).write_text(json.dumps(result, default=str))
        return 0

    pg_url = os.environ.get("AGENTOPS_TEST_PG_URL")
    redis_url = os.environ.get("AGENTOPS_TEST_REDIS_URL")
    if not pg_url or not redis_url:
        print(
            "bench/engine.py needs a PostgreSQL and a Redis; run it as\n"
            "  .venv/bin/python -m tests.servers --durable .venv/bin/python bench/engine.py",
            file=sys.stderr,
        )
        return 2

    from bench.common import (
        ALL_DBS,
        BENCH_DB,
        DBOS_DB,
        FLOOR_DB,
        LANGGRAPH_DB,
        recreate_databases,
        with_database,
        with_redis_db,
    )

    cfg = QUICK if args.quick else FULL
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    started = time.perf_counter()
    recreate_databases(pg_url, ALL_DBS)
    workdir = Path(tempfile.mkdtemp(prefix="agentops-bench-"))
    sqlite_url = f"sqlite:///{workdir / 'bench.sqlite3'}"
    sizes, warmup = cfg["sizes"], cfg["warmup"]
    plan: list[tuple[str, str, dict[str, Any], float]] = [
        ("floor", "floor", {"db": with_database(pg_url, FLOOR_DB), "n": sizes[-1]}, 300),
        (
            "ours_pg",
            "ours",
            {
                "db": with_database(pg_url, BENCH_DB),
                "sizes": sizes,
                "warmup": warmup,
                "label": "PostgreSQL",
            },
            600,
        ),
        (
            "ours_sqlite",
            "ours",
            {"db": sqlite_url, "sizes": sizes, "warmup": warmup, "label": "SQLite"},
            600,
        ),
        (
            "dbos",
            "dbos",
            {"db": with_database(pg_url, DBOS_DB), "sizes": sizes, "warmup": warmup},
            600,
        ),
        (
            "langgraph",
            "langgraph",
            {"db": with_database(pg_url, LANGGRAPH_DB), "sizes": sizes, "warmup": warmup},
            900,
        ),
        (
            "celery",
            "celery",
            {
                "broker": with_redis_db(redis_url, 1),
                "workdir": str(workdir),
                "tasks": cfg["celery_tasks"],
                "samples": cfg["samples"],
                "concurrency": cfg["concurrency"],
            },
            300,
        ),
        (
            "distributed",
            "distributed",
            {
                "db": with_database(pg_url, BENCH_DB),
                "broker": with_redis_db(redis_url, 0),
                "workdir": str(workdir),
                "samples": cfg["samples"],
                "waiting": cfg["waiting"],
                "concurrency": cfg["concurrency"],
                "observe_s": cfg["observe_s"],
                "fill_timeout": cfg["fill_timeout"],
            },
            cfg["fill_timeout"] + 180,
        ),
    ]
    results: dict[str, Any] = {}
    for key, phase, params, timeout in plan:
        if key in skip or phase in skip:
            continue
        print(f"== {key}", file=sys.stderr, flush=True)
        results[key] = spawn(phase, params, timeout=timeout)

    large = sizes[-1]
    ours_large = _per_step(results.get("ours_pg", {}), large)
    peer_figures = [v for k in ("dbos", "langgraph") if (v := _per_step(results.get(k, {}), large))]
    slower = bool(ours_large and peer_figures and ours_large > min(peer_figures))
    if (args.profile or slower) and "profile" not in skip:
        print("== profile", file=sys.stderr, flush=True)
        results["profile"] = spawn(
            "profile", {"db": with_database(pg_url, BENCH_DB), "n": sizes[0]}, timeout=300
        )

    print(render(results, cfg, quick=args.quick))
    print(f"\n(total {time.perf_counter() - started:.0f} s; logs in {workdir})")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""Benchmark of the web console on a large ledger, printed as figures, ratios and targets.

    .venv/bin/python -m tests.servers --durable .venv/bin/python bench/console.py [--quick]

(``make bench-console``, or ``make bench-console BENCH_ARGS=--quick``, does exactly that.)
``tests.servers --durable`` starts a throwaway PostgreSQL (fsync on) and a Redis; everything
below runs against them, in the distributed deployment (``DATABASE_URL`` on PostgreSQL,
``CELERY_BROKER_URL`` and ``CHANNEL_LAYER_URL`` on Redis):

1. seed 100,000 runs (10,000 with ``--quick``) with checkpoints and hash-chained events
   (``bench/console_seed.py``), and check a sample of the chains with ``verify_chain``;
2. serve with real ``daphne`` processes, and measure, with 20 concurrent clients each signed
   in with its own session (a closed loop: each sends its next request when the answer
   arrives), the p50/p95 latency of the runs list ``/runs/`` (first page, a page filtered
   by a derived view and a workflow, and a search in the runs' input) and of the same
   table's Django admin changelist ``/admin/runs/run/`` (first page, and filtered by status
   and workflow), plus the plan and time of the list's query, and the instructions a list
   page costs in one process (callgrind, ``bench/console_instructions.py``), which do not
   move with the machine's hour as the latencies do;
3. with a real ``celery worker`` driving a run whose steps finish 0.25 s apart (after 50
   quick ones, so that its page is at its full size, the latest 50 steps and events): the
   time from a step's checkpoint (``Step.finished_at``) to the pushed partial arriving at
   an open WebSocket on the run's page;
4. the same with 1 viewer and with 1,000 viewers of that run's page connected to one daphne
   process: the latency of the first and of the last viewer the server serves (each in a
   client process of its own), and of all of them. A push's latency ends when it arrives
   in its viewer's socket (the kernel's receive timestamp), as a browser on its own machine
   would read it; the time to the crowd's clients reading it is reported beside it (500
   viewers share a client process and the clients share the cores with the server, so
   their CPU is in both figures and their backlog in the second); then again with the
   daphne process pinned to a core of its own and the clients to the others, as deployed
   (a process per core, the pages on other machines).

``--quick`` runs smaller sizes (under two minutes on two cores).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
# Run as a script, Python puts bench/ first on sys.path; the modules import ``bench.*``.
if sys.path and Path(sys.path[0]).resolve() == ROOT / "bench":
    sys.path[0] = str(ROOT)
elif str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

CONSOLE_DB = "console_bench"
FULL: dict[str, Any] = {
    "runs": 100_000,
    "verify": 500,  # chains checked (0: all of them)
    "clients": 20,
    "requests": 30,  # per client and page
    "warmup": 3,
    "alone": 50,  # requests of the one client, per page
    "web_procs": [1, 2],
    "step_ticks": 200,
    "step_interval": 0.25,
    "viewers": 1000,
    # Steps a second apart: pushes are throttled to five a second per run (runs.live), and
    # a throttled push would add the same wait to one viewer and to 1,000. Sixty of them: a
    # p95 of 30 is the second worst, and moved a run's ratio by a quarter either way.
    "viewer_ticks": 60,
    "viewer_interval": 1.0,
    "crowd_processes": 2,  # the crowd's clients (1,000 pages are many machines, not one)
    "wrk_seconds": 10,  # each page's measured load from wrk
}
QUICK: dict[str, Any] = {
    **FULL,
    "runs": 10_000,
    "verify": 2000,
    "requests": 8,
    "warmup": 2,
    "alone": 10,
    "web_procs": [1],
    "step_ticks": 30,
    "viewers": 200,
    "viewer_ticks": 6,
}
TARGETS = {"list_p95_ms": 150.0, "list_vs_admin": 1.0, "viewers_ratio": 2.0, "step_p95_ms": 250.0}
PAGES = [
    ("list, first page", "lead", "/runs/", 'id="runs-table"'),
    (
        "list, over 80% of budget + workflow",
        "lead",
        "/runs/?status=over-budget&workflow=digest",
        'id="runs-table"',
    ),
    ("list, search in the input", "lead", "/runs/?q=backlog", 'id="runs-table"'),
    ("admin, first page", "admin", "/admin/runs/run/", 'id="result_list"'),
    (
        "admin, status + workflow",
        "admin",
        "/admin/runs/run/?status__exact=waiting&workflow=digest",
        'id="result_list"',
    ),
]

LIST_PAGES = [label for label, who, *_ in PAGES if who == "lead"]


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ============================================================================ processes
def _env(db_url: str, redis_url: str) -> dict[str, str]:
    from bench.common import django_env, with_redis_db

    env = {**os.environ, **django_env(db_url, broker=with_redis_db(redis_url, 2))}
    env["CHANNEL_LAYER_URL"] = with_redis_db(redis_url, 3)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def start_daphne(env: dict[str, str], workdir: Path, index: int) -> tuple[subprocess.Popen, int]:
    from tests.servers import free_port

    port = free_port()
    log = (workdir / f"daphne-{index}.log").open("ab")
    proc = subprocess.Popen(
        [
            *(sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), "-v", "0"),
            "agentops.asgi:application",
        ],
        env=env,
        cwd=str(ROOT),
        stdout=log,
        stderr=log,
    )
    return proc, port


def wait_served(proc: subprocess.Popen, port: int) -> None:
    from bench.common import wait_until

    def up() -> bool:
        if proc.poll() is not None:
            raise RuntimeError(f"daphne exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/login/", timeout=2) as resp:
                return resp.status == 200
        except OSError:
            return False

    wait_until(up, timeout=60, every=0.1, what=f"daphne on port {port}")


def session_cookies(prefix: str, count: int) -> list[str]:
    """A signed-in session per client (``Client.force_login`` writes it to the database the
    servers read, as the tests do), as a ``Cookie`` header."""
    from django.conf import settings
    from django.contrib.auth.models import User
    from django.test import Client

    out = []
    for i in range(count):
        client = Client()
        client.force_login(User.objects.get(username=f"{prefix}-{i:02d}"))
        out.append(
            f"{settings.SESSION_COOKIE_NAME}={client.cookies[settings.SESSION_COOKIE_NAME].value}"
        )
    return out


# ============================================================================ HTTP pages
def page_queries(path: str, username: str) -> dict[str, Any]:
    """The page's queries, in this process (same settings): count, time, and the plan of
    the slowest one."""
    from django.contrib.auth.models import User
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    client = Client(HTTP_HOST="127.0.0.1")
    client.force_login(User.objects.get(username=username))
    client.get(path)
    with CaptureQueriesContext(connection) as captured:
        t0 = time.perf_counter()
        resp = client.get(path)
        elapsed = (time.perf_counter() - t0) * 1000
    assert resp.status_code == 200, (path, resp.status_code)
    queries = captured.captured_queries
    slowest = max(queries, key=lambda q: float(q["time"]))
    with connection.cursor() as cur:
        cur.execute(f"EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) {slowest['sql']}")
        plan = "\n".join(row[0] for row in cur.fetchall())
    execution = next(
        (
            float(line.split(":")[1].split()[0])
            for line in plan.splitlines()
            if "Execution Time" in line
        ),
        None,
    )
    return {
        "in_process_ms": elapsed,
        "queries": len(queries),
        "sql_ms": sum(float(q["time"]) for q in queries) * 1000,
        "slowest_sql": slowest["sql"],
        "slowest_execution_ms": execution,
        "slowest_plan": plan,
    }


def page_instructions(env: dict[str, str], cookies: dict[str, list[str]]) -> dict[str, float]:
    """The first list page's instructions per request in one process (callgrind; under two
    minutes, most of it Django starting twice under valgrind): a figure that does not move
    with the machine's hour, as the latencies do."""
    from bench.console_instructions import instructions_per_request

    label, who, path, _ = PAGES[0]
    _log(f"[callgrind] {label}")
    count = instructions_per_request(env, path, cookies[who][0])
    if count is None:
        _log("valgrind is not installed: the instruction count is left out")
        return {}
    return {label: count}


def measure_pages(
    ports: list[int],
    cookies: dict[str, list[str]],
    cfg: dict[str, Any],
    *,
    wrk_in: Path | None = None,
) -> dict:
    """Each page under the closed loop of one client per cookie: Python threads
    (``http_load``), or wrk when given a folder for its script (``wrk_load``)."""
    from bench.console_clients import http_load, wrk_load
    from bench.console_live import figures

    out = {}
    for label, who, path, marker in PAGES:
        if wrk_in is None:
            res = http_load(
                ports,
                path,
                cookies[who],
                requests=cfg["requests"],
                warmup=cfg["warmup"],
                marker=marker,
            )
            fig = figures(res["latencies_ms"])
            fig["throughput"] = len(res["latencies_ms"]) / res["wall_s"] if res["wall_s"] else 0
            fig["errors"] = res["errors"][:3]
        else:
            wrk_load(ports, path, cookies[who], seconds=2, workdir=wrk_in)  # warm-up
            fig = wrk_load(ports, path, cookies[who], seconds=cfg["wrk_seconds"], workdir=wrk_in)
        out[label] = fig
        errors = f" ERRORS {fig['errors']}" if fig["errors"] else ""
        _log(
            f"[{'http' if wrk_in is None else 'wrk'} x{len(ports)}] {label}: "
            f"p50 {fig['p50']:.1f} ms, p95 {fig['p95']:.1f} ms, "
            f"{fig['throughput']:.0f} req/s{errors}"
        )
    return out


def measure_alone(port: int, cookies: dict[str, list[str]], cfg: dict[str, Any]) -> dict:
    """Each page from one client at a time: the service time, without a queue."""
    from bench.console_clients import http_load
    from bench.console_live import figures

    out = {}
    for label, who, path, marker in PAGES:
        res = http_load(
            [port], path, cookies[who][:1], requests=cfg["alone"], warmup=2, marker=marker
        )
        out[label] = {**figures(res["latencies_ms"]), "errors": res["errors"][:3]}
    return out


def viewers(
    port: int,
    cookies: list[str],
    workdir: Path,
    cfg: dict[str, Any],
    *,
    n: int,
    tag: str = "",
    client_cpus: set[int] | None = None,
) -> dict[str, Any]:
    """1 viewer, then ``n``; a crowd that cannot connect is reported, not raised."""
    from bench.console_live import watch

    out: dict[str, Any] = {}
    for key, count in (("viewers_1", 1), ("viewers_n", n)):
        try:
            out[key] = watch(
                port, cookies, workdir, viewers=count, ticks=cfg["viewer_ticks"],
                interval=cfg["viewer_interval"], name=f"v{count}{tag}",
                crowd_processes=cfg["crowd_processes"], client_cpus=client_cpus,
            )  # fmt: skip
        except (RuntimeError, TimeoutError) as exc:
            _log(f"[live v{count}{tag}] {exc}")
            out[key] = {"viewers": count, "error": str(exc)}
    return out


# ============================================================================ report
def _ms(v: float | None) -> str:
    return "-" if v is None or v != v else f"{v:,.1f} ms"


def _x(v: float | None) -> str:
    return "-" if v is None or v != v else f"{v:.2f}x"


def _verdict(ok: bool | None) -> str:
    return "n/a" if ok is None else ("met" if ok else "MISSED")


def _page_rows(add: Any, by_procs: dict[Any, dict[str, Any]]) -> None:
    """One row a page and number of daphne processes: p50, p95, max, requests a second."""
    for procs_n, pages in by_procs.items():
        for label, fig in pages.items():
            add(
                f"  {label:40}{procs_n:>8}{_ms(fig['p50']):>11}{_ms(fig['p95']):>11}"
                f"{_ms(fig['max']):>11}{fig['throughput']:>8.0f}"
            )


def render(results: dict[str, Any], cfg: dict[str, Any], *, quick: bool) -> str:
    lines: list[str] = []
    add = lines.append
    seed = results.get("seed", {})
    add("")
    add(f"agentops console benchmark ({'quick' if quick else 'full'}); {os.cpu_count()} CPUs")
    add(
        f"seeded {seed.get('runs', 0):,} runs, {seed.get('steps', 0):,} steps, "
        f"{seed.get('events', 0):,} events in {seed.get('seconds', 0):.0f} s (COPY); "
        f"verify_chain over {results.get('verify', {}).get('chains', 0):,} chains: "
        f"{results.get('verify', {}).get('broken', '?')} broken"
    )
    for name, res in results.items():
        if isinstance(res, dict) and "error" in res:
            add(f"!! {name}: {res['error']}")

    add("")
    add(
        f"1. Pages, {cfg['clients']} concurrent signed-in clients, closed loop, "
        f"{cfg['requests']} requests each (latency incl. queueing)"
    )
    add(f"  {'':40}{'daphne':>8}{'p50':>11}{'p95':>11}{'max':>11}{'req/s':>8}")
    _page_rows(add, results.get("pages", {}))
    if results.get("pages_wrk"):
        add("")
        add(
            f"  The same, the load from wrk (C; {cfg['clients']} connections, one request in "
            f"flight each, {cfg['wrk_seconds']} s a page; p95 the worst of one wrk per daphne)"
        )
        _page_rows(add, results["pages_wrk"])
    alone = results.get("alone", {})
    if alone:
        add("")
        add(f"  One client at a time (1 daphne), {cfg['alone']} requests: the service time")
        for label, fig in alone.items():
            add(
                f"  {label:40}{'':8}{_ms(fig['p50']):>11}{_ms(fig['p95']):>11}{_ms(fig['max']):>11}"
            )
    add("")
    add("  In one process (same settings), per request:")
    for label, q in results.get("queries", {}).items():
        add(
            f"    {label:38} {q['in_process_ms']:6.1f} ms, {q['queries']} queries "
            f"({q['sql_ms']:.1f} ms); slowest query executes in "
            f"{q['slowest_execution_ms'] or 0:.2f} ms"
        )

    if results.get("instructions"):
        add("  In one process, instructions per request (callgrind; the same on any hour):")
        for label, count in results["instructions"].items():
            add(f"    {label:38} {count / 1e6:6.1f} M")

    add("")
    step = results.get("step", {})
    if step.get("probe"):
        add(
            f"2. Step -> browser, real celery worker + Redis channel layer, {step['ticks']} steps "
            f"{cfg['step_interval']:g} s apart, one WebSocket viewer on the run's page"
        )
        add(f"  {'':36}{'p50':>12}{'p95':>12}{'max':>12}")
        add(_fig_row("Step.finished_at -> message", step["probe"]))
        add(f"  missed pushes: {step['missed']}")

    one, many = results.get("viewers_1", {}), results.get("viewers_n", {})
    if one or many:
        add("")
        add(
            f"3. Viewers of one run's page on one daphne process, {cfg['viewer_ticks']} steps "
            f"{cfg['viewer_interval']:g} s apart: Step.finished_at -> message"
        )
        _viewers_section(add, "the clients sharing every core with the server", one, many)
        pinned = results.get("pinned", {})
        if pinned:
            _viewers_section(
                add,
                "the server on a core of its own, the clients on the others (as deployed, "
                "where the pages are other machines)",
                pinned.get("viewers_1", {}),
                pinned.get("viewers_n", {}),
            )

    # ------------------------------------------------------------------ targets
    add("")
    add("Targets")
    rows: list[tuple[str, str, bool | None]] = []
    for load, by_procs in (
        ("", results.get("pages", {})),
        (" (wrk)", results.get("pages_wrk", {})),
    ):
        for procs_n, p in by_procs.items():
            lp = max(p[label]["p95"] for label in LIST_PAGES)
            rows.append(
                (
                    f"list p95{load}, worst of the {len(LIST_PAGES)} pages ({procs_n} daphne)",
                    _ms(lp),
                    lp < TARGETS["list_p95_ms"],
                )
            )
    for procs_n, p in results.get("pages", {}).items():
        for (list_label, *_), (admin_label, *_) in ((PAGES[0], PAGES[3]), (PAGES[1], PAGES[4])):
            ap = p[admin_label]["p95"]
            ratio = p[list_label]["p95"] / ap if ap else None
            which = "first pages" if list_label == PAGES[0][0] else "filtered pages"
            rows.append(
                (
                    f"list p95 / admin p95, {which} ({procs_n} daphne)",
                    _x(ratio),
                    None if ratio is None else ratio < TARGETS["list_vs_admin"],
                )
            )
    pinned = results.get("pinned", {})
    for where, (one_, many_) in (
        ("shared cores", (one, many)),
        ("server's own core", (pinned.get("viewers_1", {}), pinned.get("viewers_n", {}))),
    ):
        rows.extend(_viewer_rows(where, one_, many_))
    if step.get("probe"):
        sp = step["probe"]["p95"]
        rows.append(("step -> browser p95", _ms(sp), sp < TARGETS["step_p95_ms"]))
    for label, value, ok in rows:
        add(f"  {label:56}{value:>12}  {_verdict(ok)}")
    return "\n".join(lines)


def _viewer_rows(
    where: str, one: dict[str, Any], many: dict[str, Any]
) -> list[tuple[str, str, bool | None]]:
    if not one.get("probe") or not many.get("all"):
        return []
    rows: list[tuple[str, str, bool | None]] = []
    base = one["probe"]["p95"]
    for label, fig in (
        ("all", many["all"]),
        ("the last served", many.get("last_probe")),
        # The same crowd against its own first-served viewer: one run, the same minute of a
        # shared machine (1 viewer is a separate run).
        ("all / the first served, same run", many["all"]),
    ):
        if not fig:
            continue
        denominator = many["probe"]["p95"] if "first served" in label else base
        r = fig["p95"] / denominator if denominator else None
        head = label if "first served" in label else f"{label} / 1 viewer"
        rows.append(
            (
                f"p95 {many['viewers']:,} viewers, {head} ({where})",
                _x(r),
                None if r is None else r <= TARGETS["viewers_ratio"],
            )
        )
    return rows


def _viewers_section(add: Any, title: str, one: dict[str, Any], many: dict[str, Any]) -> None:
    add(f"  {title}:")
    for res in (one, many):
        if "error" in res:
            add(f"  {res['viewers']:,} viewers: FAILED: {res['error']}")
    if not one.get("probe") or not many.get("probe"):
        return
    n = many["viewers"]
    add(f"  {'':36}{'p50':>12}{'p95':>12}{'max':>12}")
    add(_fig_row("1 viewer", one["probe"]))
    add(_fig_row(f"{n:,} viewers: the first served", many["probe"]))
    if many.get("last_probe"):
        add(_fig_row(f"{n:,} viewers: the last served", many["last_probe"]))
    add(_fig_row(f"{n:,} viewers: all of them", many["all"]))
    if many.get("all_read"):
        add(_fig_row(f"{n:,} viewers: all, as read", many["all_read"]))
    add(_fig_row(f"{n:,} viewers: the last, per step", many["last_viewer"]))
    add(
        f"  connected {many['connected']:,} of {n:,} in {many['connect_s']} s; closed with "
        f"an error: {many['failed']:,}; (viewer, step) pairs never shown: {many['missed']:,}; "
        f"reads without the kernel's arrival time: {many.get('unstamped', 0):,}"
    )
    if many.get("crowd_cpu_s"):
        add(
            f"  the crowd's clients (sharing the cores) used {many['crowd_cpu_s']:.2f} s of CPU "
            f"while receiving, {many['crowd_cpu_s'] / max(n - 2, 1) * 1e6 / many['ticks']:.0f} µs "
            "per viewer and step"
        )


def _fig_row(label: str, fig: dict[str, float]) -> str:
    return f"  {label:36}{_ms(fig['p50']):>12}{_ms(fig['p95']):>12}{_ms(fig['max']):>12}"


# ============================================================================ main
def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="smaller sizes (under two minutes)")
    ap.add_argument("--skip", default="", help="comma-separated parts to skip: pages,step,viewers")
    ap.add_argument("--json", help="also write all figures to this file")
    ap.add_argument("--viewers-count", type=int, help="how many WebSocket viewers (default 1,000)")
    ap.add_argument("--viewers", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.viewers:
        from bench.console_clients import viewers_main

        viewers_main(json.loads(args.viewers), Path(args.out))
        return 0

    pg_url = os.environ.get("AGENTOPS_TEST_PG_URL")
    redis_url = os.environ.get("AGENTOPS_TEST_REDIS_URL")
    if not pg_url or not redis_url:
        print(
            "bench/console.py needs a PostgreSQL and a Redis; run it as\n"
            "  .venv/bin/python -m tests.servers --durable .venv/bin/python bench/console.py",
            file=sys.stderr,
        )
        return 2

    from bench.common import recreate_databases, setup_django, with_database, with_redis_db

    cfg = dict(QUICK if args.quick else FULL)
    if args.viewers_count:
        cfg["viewers"] = args.viewers_count
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    started = time.perf_counter()
    workdir = Path(tempfile.mkdtemp(prefix="agentops-console-bench-"))
    db_url = with_database(pg_url, CONSOLE_DB)
    recreate_databases(pg_url, [CONSOLE_DB])
    env = _env(db_url, redis_url)
    os.environ.update({k: env[k] for k in ("CHANNEL_LAYER_URL",)})
    setup_django(db_url, broker=with_redis_db(redis_url, 2))
    os.environ["CHANNEL_LAYER_URL"] = env["CHANNEL_LAYER_URL"]

    import redis

    from bench import console_seed
    from bench.console_live import pin, watch
    from bench.peers import start_worker, stop_process

    redis.Redis.from_url(with_redis_db(redis_url, 2)).flushdb()
    redis.Redis.from_url(with_redis_db(redis_url, 3)).flushdb()
    results: dict[str, Any] = {}
    _log("== seed")
    results["seed"] = console_seed.seed(cfg["runs"], clients=cfg["clients"])
    results["verify"] = console_seed.verify_sample(cfg["verify"])
    cookies = {
        "lead": session_cookies("lead", cfg["clients"]),
        "admin": session_cookies("admin", cfg["clients"]),
    }

    webs: list[tuple[subprocess.Popen, int]] = []
    worker = None
    try:
        for i in range(max(cfg["web_procs"])):
            webs.append(start_daphne(env, workdir, i))
        for proc, port in webs:
            wait_served(proc, port)
        if "pages" not in skip:
            _log("== pages")
            results["queries"] = {
                label: page_queries(path, f"{who}-00") for label, who, path, _ in PAGES
            }
            results["alone"] = measure_alone(webs[0][1], cookies, cfg)
            if not args.quick:
                results["instructions"] = page_instructions(env, cookies)
            results["pages"] = {}
            for n in cfg["web_procs"]:
                ports = [port for _, port in webs[:n]]
                results["pages"][n] = measure_pages(ports, cookies, cfg)
            if shutil.which("wrk"):
                results["pages_wrk"] = {}
                for n in cfg["web_procs"]:
                    ports = [port for _, port in webs[:n]]
                    results["pages_wrk"][n] = measure_pages(ports, cookies, cfg, wrk_in=workdir)
            else:
                _log("wrk is not installed (apt-get install wrk): its figures are left out")
        worker = start_worker("agentops", "runs,sweeps", env, workdir / "worker.log", concurrency=4)
        port = webs[0][1]
        if "step" not in skip:
            _log("== step -> browser")
            results["step"] = watch(
                port, cookies["lead"], workdir, viewers=1, ticks=cfg["step_ticks"],
                interval=cfg["step_interval"], name="step",
            )  # fmt: skip
        if "viewers" not in skip:
            _log("== viewers")
            results.update(viewers(port, cookies["lead"], workdir, cfg, n=cfg["viewers"]))
            cpus = os.sched_getaffinity(0)
            if len(cpus) > 1:
                # As deployed: the daphne process on a core of its own, the viewers' pages on
                # other machines. Here the clients at least keep off the server's core.
                _log("== viewers, the server on a core of its own")
                server_cpu = min(cpus)
                pin(webs[0][0].pid, {server_cpu})
                results["pinned"] = viewers(
                    port, cookies["lead"], workdir, cfg, n=cfg["viewers"], tag="-pinned",
                    client_cpus=cpus - {server_cpu},
                )  # fmt: skip
    finally:
        if worker is not None:
            stop_process(worker)
        for proc, _ in webs:
            stop_process(proc)

    print(render(results, cfg, quick=args.quick))
    print(f"\n(total {time.perf_counter() - started:.0f} s; logs in {workdir})")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""Screenshots of the console's main pages, taken from a real `manage.py serve` with the demo.

    python -m tests.runs.screenshots                       # docs/screenshots/*.png, 1280x800
    python -m tests.runs.screenshots --width 390 --height 844 --full-page --out /tmp/narrow

Starts one embedded server on a throwaway SQLite data dir, seeds it like `make run` does
(`bootstrap_demo`, plus a few runs in other states), signs in as the demo admin in headless
Chromium (Playwright), and saves the runs list, a run's page, the start form and the
dashboard. Not a test: the README's pictures, and a way to look at small screens.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "agentops.settings")

import django

django.setup()  # tests.embedded imports the test helpers, which import the engine

from tests.embedded import ROOT, embedded_env, manage, serving  # noqa: E402
from tests.runs.test_browser import CHROMIUM, CHROMIUM_ARGS  # noqa: E402

PAGES = ("runs-list", "run-detail", "start-run", "dashboard")
#: How long a page may take to show what the demo does (its runs start within a second).
TIMEOUT_MS = 30_000

# More runs than the three of the demo, so that the list shows more than one state.
EXTRA_RUNS = """
from runs.models import Run, Team
from django.contrib.auth.models import User

by = {"team": Team.objects.get(slug="default"), "actor": "user:admin"}
by["user"] = User.objects.get(username="admin")
long, _ = Run.start("digest", {"pattern": "**/*.py", "limit": 2000}, budget={"usd": 50}, **by)
Run.start("digest", {"corpus": "/nonexistent"}, **by)
Run.start("nap", {"seconds": 3600}, **by)
print(long.pk)
"""

#: Elements that stick out of the viewport on the right, except inside the containers that
#: scroll sideways on purpose (tables, JSON).
OVERFLOW_JS = """() => {
  const view = document.documentElement.clientWidth;
  const wide = [];
  for (const el of document.querySelectorAll("body *")) {
    if (el.closest(".table-wrap, pre, .visually-hidden, #toasts")) continue;
    const right = el.getBoundingClientRect().right;
    if (right > view + 1) {
      const cls = typeof el.className === "string" && el.className
        ? "." + el.className.trim().split(/\\s+/).join(".")
        : "";
      const name = el.tagName.toLowerCase() + (el.id ? "#" + el.id : "") + cls;
      wide.push(name + " (" + Math.round(right) + " px)");
    }
  }
  return wide.slice(0, 12);
}"""


def take(out: Path, *, width: int, height: int, full_page: bool) -> list[Path]:
    from playwright.sync_api import sync_playwright

    out.mkdir(parents=True, exist_ok=True)
    saved: list[Path] = []
    with tempfile.TemporaryDirectory(prefix="agentops-shots-") as tmp:
        data_dir = Path(tmp)
        env = embedded_env(data_dir)
        env.pop("AGENTOPS_APPS", None)  # the demo's workflows only, as `make run` shows them
        manage(env, "migrate", "-v0")
        with serving(env) as served, sync_playwright() as pw:
            manage(env, "bootstrap_demo", "--base-url", served.base)
            long_run = manage(env, "shell", "-c", EXTRA_RUNS).split()[-1]
            password = (data_dir / "demo-admin-password").read_text().strip()
            browser = pw.chromium.launch(
                executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
            )
            page = browser.new_page(viewport={"width": width, "height": height})
            page.set_default_timeout(TIMEOUT_MS)

            def shot(name: str) -> None:
                # Live toasts and countdowns are the page's; the mouse is not.
                page.mouse.move(0, 0)
                path = out / f"{name}.png"
                page.screenshot(path=str(path), full_page=full_page)
                saved.append(path)
                wide = page.evaluate(OVERFLOW_JS)
                if wide:
                    print(f"{name}: wider than {width} px: {', '.join(wide)}", file=sys.stderr)

            try:
                _visit(page, served.base, password, long_run, shot)
            except Exception:
                failure = Path(tempfile.gettempdir()) / "agentops-screenshots-failure.png"
                page.screenshot(path=str(failure), full_page=True)
                print(f"failed; the page as it was: {failure}", file=sys.stderr)
                raise
            finally:
                browser.close()
    return saved


def _visit(page: Any, base: str, password: str, long_run: str, shot: Callable[[str], None]) -> None:
    """Sign in, make one run worth looking at, and take the pictures."""
    from playwright.sync_api import expect

    page.goto(f"{base}/login/")
    page.locator("#id_username").fill("admin")
    page.locator("#id_password").fill(password)
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator(".account .who")).to_have_text("admin")

    # A long digest, paused by hand part-way: progress, budget, steps and actions.
    page.goto(f"{base}/runs/{long_run}/")
    page.wait_for_function(
        "() => Number((document.querySelector('#run-progress-bar') || {}).value) >= 3"
    )
    page.locator("#run-live").get_by_role("button", name="Pause").click()
    badge = page.locator("#run-live .summary-status .badge")
    expect(badge).to_have_text("paused")
    page.locator(".toast-close").first.click()
    expect(page.locator(".toast")).to_have_count(0)
    detail_url = page.url

    # The list once the short runs have finished or failed.
    page.goto(f"{base}/runs/")
    expect(page.locator("table.runs .badge-failed")).to_have_count(1)
    expect(page.locator("table.runs .badge-succeeded")).not_to_have_count(0)
    shot("runs-list")

    page.goto(detail_url)
    expect(badge).to_have_text("paused")
    shot("run-detail")

    page.goto(f"{base}/runs/new/?workflow=digest")
    expect(page.locator("#start-form form")).to_be_visible()
    shot("start-run")

    page.goto(f"{base}/dashboard/")
    expect(page.get_by_role("heading", name="Dashboard")).to_be_visible()
    shot("dashboard")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "screenshots")
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=800)
    parser.add_argument("--full-page", action="store_true", help="the whole page, not the view")
    args = parser.parse_args(argv)
    if not Path(CHROMIUM).exists():
        print(f"Chromium not found at {CHROMIUM} (set AGENTOPS_CHROMIUM)", file=sys.stderr)
        return 1
    for path in take(args.out, width=args.width, height=args.height, full_page=args.full_page):
        print(f"{path} ({path.stat().st_size // 1024} KiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

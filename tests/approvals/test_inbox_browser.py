"""The approvals inbox in a real browser: Chromium (driven by Playwright) against one real
`manage.py serve` process on SQLite, with its embedded workers and beat.

Two reviewers, each in their own browser, decide a request that needs both of them; a third
keeps the inbox open without deciding. The request appears in every inbox when the run
reaches its gate, the first approval (with an edit) is recorded, the second settles it, the
request leaves every open inbox without a reload, and the run resumes with the edited
payload and succeeds.
"""

from __future__ import annotations

import re
import textwrap
from collections.abc import Iterator
from typing import Any

import pytest

from tests.embedded import embedded_env, manage, serving
from tests.runs import test_browser
from tests.runs.test_browser import (
    LIVE_TIMEOUT_MS,
    PASSWORD,
    STATUS_BADGE,
    sign_in,
    status,
    still_same_document,
)

# The browser and its per-person pages, as for the runs' browser tests.
browser = test_browser.browser
new_page = test_browser.new_page

pytestmark = pytest.mark.browser

USERS_SCRIPT = textwrap.dedent(
    f"""
    from django.contrib.auth.models import User
    from runs.models import Membership, Team

    team = Team.objects.get_or_create(slug="alpha", defaults={{"name": "Alpha"}})[0]
    for username, role in (("olga", "operator"), ("rita", "reviewer"), ("ray", "reviewer"),
                           ("rex", "reviewer")):
        user = User.objects.create_user(username, password={PASSWORD!r})
        Membership.objects.create(user=user, team=team, role=role)
    """
)
#: Started from another process: its doorbell is lost, and the server's orphan sweep rings.
START_SCRIPT = textwrap.dedent(
    """
    from django.contrib.auth.models import User
    from runs.models import Run

    olga = User.objects.get(username="olga")
    run = Run.start("t-approve", {"quorum": 2}, team="alpha", actor="user:olga", user=olga)[0]
    print(run.pk)
    """
)
ROWS = "#inbox-list tr.approval-row"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, dict[str, str]]]:
    """One `manage.py serve` on its own SQLite data dir; yields its base URL and environment."""
    env = embedded_env(tmp_path_factory.mktemp("inbox-serve"))
    manage(env, "migrate", "-v0")
    manage(env, "shell", "-c", USERS_SCRIPT)
    with serving(env) as served:
        yield served.base, env


def open_inbox(new_page: Any, base: str, username: str) -> Any:
    from playwright.sync_api import expect

    page = new_page()
    sign_in(page, base, username)
    page.goto(f"{base}/approvals/")
    expect(page.get_by_role("heading", name="Approvals", exact=True)).to_be_visible()
    expect(page.locator("#inbox-list")).to_contain_text("Nothing waits on you.")
    # Anything that reloads or navigates the page from here on drops this marker.
    page.evaluate("window.__sameDocument = true")
    return page


def test_two_reviewers_decide_a_quorum_request_and_the_run_succeeds(
    new_page: Any, server: tuple[str, dict[str, str]]
) -> None:
    from playwright.sync_api import expect

    base, env = server
    rita = open_inbox(new_page, base, "rita")
    ray = open_inbox(new_page, base, "ray")
    rex = open_inbox(new_page, base, "rex")

    run_id = manage(env, "shell", "-c", START_SCRIPT).strip().splitlines()[-1]
    # The run reaches its gate: the request appears in every open inbox, pushed.
    for page in (rita, ray, rex):
        row = page.locator(ROWS, has_text="publish")
        expect(row).to_have_count(1, timeout=LIVE_TIMEOUT_MS)
        expect(row).to_contain_text("t-approve")
        expect(row).to_contain_text("0 of 2")
        expect(
            page.get_by_role("link", name=re.compile(r"^Approvals\s+1 waiting on you"))
        ).to_be_visible()

    # The row can be ticked for a bulk decision; the bar counts it.
    tick = rita.locator(ROWS, has_text="publish").locator("input.approval-select")
    tick.check()
    expect(rita.locator("#inbox-bulk-count")).to_have_text("1 request selected:")
    tick.uncheck()
    expect(rita.locator("#inbox-bulk-count")).to_have_text("0 requests selected:")

    # htmx wires the new pane's triggers (the diff on input) as it settles, 20 ms after the
    # swap (``htmx-added`` goes then): type after that.
    settling = "#approval-detail.htmx-added, #approval-detail.htmx-settling"

    # Rex has it open in his pane meanwhile: the pane follows what the others decide.
    rex.locator(ROWS).get_by_role("link", name="publish").click()
    rex_pane = rex.locator("#approval-detail")
    expect(rex_pane.locator(".badge-approval-pending")).to_be_visible()
    expect(rex_pane.locator(".facts")).to_contain_text("0 of 2")

    # Ray has it open too, and has started a comment: his pane keeps his typing.
    ray.locator(ROWS).get_by_role("link", name="publish").click()
    ray_pane = ray.locator("#approval-detail")
    expect(ray.locator(settling)).to_have_count(0)
    ray_pane.get_by_label(re.compile("^Comment")).fill("looking at it")

    # Rita opens it in the pane, retitles it (the diff shows old → new) and approves.
    rita.locator(ROWS).get_by_role("link", name="publish").click()
    pane = rita.locator("#approval-detail")
    expect(pane.get_by_role("heading", name="publish")).to_be_visible()
    expect(pane.locator("pre.json")).to_contain_text('"to": "all@example.com"')
    expect(rita.locator(settling)).to_have_count(0)
    pane.get_by_label("title").fill("Weekly report, checked")
    diff = pane.locator("#edit-diff")
    expect(diff.locator("del.diff-old")).to_contain_text("Weekly report")
    expect(diff.locator("ins.diff-new")).to_contain_text("Weekly report, checked")
    pane.get_by_label(re.compile("^Comment")).fill("retitled")
    pane.get_by_role("button", name="Approve").click()
    expect(
        rita.locator(".toast-success", has_text="is recorded (1 of 2); it needs another reviewer")
    ).to_be_visible()
    expect(pane.locator(".history")).to_contain_text("rita")
    # It leaves her inbox (she approved already) and stays in the others', now 1 of 2.
    expect(rita.locator(ROWS)).to_have_count(0)
    for page in (ray, rex):
        expect(page.locator(ROWS, has_text="publish")).to_contain_text(
            "1 of 2", timeout=LIVE_TIMEOUT_MS
        )

    expect(rex_pane.locator(".facts")).to_contain_text("1 of 2", timeout=LIVE_TIMEOUT_MS)
    expect(rex_pane.locator(".history")).to_contain_text("rita")
    # Ray's pane says the request changed, and still holds his comment.
    expect(ray_pane.locator(".pane-stale")).to_contain_text(
        "Another reviewer acted", timeout=LIVE_TIMEOUT_MS
    )
    expect(ray_pane.get_by_label(re.compile("^Comment"))).to_have_value("looking at it")
    expect(ray_pane.locator(".facts")).to_contain_text("0 of 2")

    # Ray sees her decision and the edit in the pane, and approves: that settles it.
    ray.locator(ROWS).get_by_role("link", name="publish").click()
    pane = ray.locator("#approval-detail")
    expect(pane.locator(".history")).to_contain_text("retitled")
    expect(pane.locator(".history ins.diff-new")).to_have_text("Weekly report, checked")
    pane.get_by_role("button", name="Approve").click()
    expect(ray.locator(".toast-success", has_text="the run continues")).to_be_visible()
    expect(pane.locator(".badge-approval-approved")).to_be_visible()
    # Rex's pane shows the outcome: nothing left to decide there.
    expect(rex_pane.locator(".badge-approval-approved")).to_be_visible(timeout=LIVE_TIMEOUT_MS)
    expect(rex_pane.get_by_role("button", name="Approve")).to_have_count(0)
    # The request leaves every open inbox at once, with no reload.
    for page in (ray, rex):
        expect(page.locator(ROWS)).to_have_count(0, timeout=LIVE_TIMEOUT_MS)
        expect(page.locator("#inbox-list")).to_contain_text("Nothing waits on you.")
        expect(page.locator("#approvals-badge")).to_be_hidden()
    for page in (rita, ray, rex):
        assert still_same_document(page), "the page was reloaded"

    # The run resumed with the edited payload and succeeded.
    rita.goto(f"{base}/runs/{run_id}/")
    expect(rita.locator(STATUS_BADGE)).to_have_text(status("succeeded"), timeout=LIVE_TIMEOUT_MS)
    expect(rita.locator("#run-live")).to_contain_text("Weekly report, checked")

    # A decided request stays searchable, with its history.
    rex.goto(f"{base}/approvals/?status=decided&q={run_id[:8]}")
    row = rex.locator(ROWS, has_text="publish")
    expect(row).to_contain_text("approved")
    row.get_by_role("link", name="publish").click()
    history = rex.locator("#approval-detail .history")
    expect(history).to_contain_text("rita")
    expect(history).to_contain_text("ray")

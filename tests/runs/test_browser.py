"""The console in a real browser: Chromium (driven by Playwright) against one real
`manage.py serve` process on SQLite, with its embedded workers and beat.

A team lead starts a run and watches it move without reloading the page, cancels a long
run from its page, is told within a second when a teammate pauses it, and a person of another
team sees none of it. What a run's page shows live must come by its WebSocket: the page would
also get there by polling (its fallback), so the tests watch the socket's frames and the
polls from outside the page (``watch_wire``) and fail if the page polled.
"""

from __future__ import annotations

import os
import re
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn
from urllib.parse import parse_qs, urlsplit

import pytest

from tests.embedded import embedded_env, manage, serving

pytestmark = pytest.mark.browser

CHROMIUM = os.environ.get("AGENTOPS_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
PASSWORD = "a-long-browser-test-password"
#: How long the page may take to show what the server did (pushes arrive in well under 1 s).
LIVE_TIMEOUT_MS = 20_000
#: A person's action is on every open page of the run within a second (and a little slack
#: for a loaded test machine). A page that polls instead (every 2 s) may miss this at random,
#: so the tests also check that what they saw came in a frame of the run's socket.
PUSH_WITHIN_S = 1.5

USERS_SCRIPT = textwrap.dedent(
    f"""
    from django.contrib.auth.models import User
    from runs.models import Membership, Team

    for username, slug in (("olive", "alpha"), ("otto", "alpha"), ("oscar", "beta")):
        team = Team.objects.get_or_create(slug=slug, defaults={{"name": slug.title()}})[0]
        user = User.objects.create_user(username, password={PASSWORD!r})
        Membership.objects.create(user=user, team=team, role=Membership.Role.OPERATOR)
    """
)

RUN_LIVE = "#run-live"
STATUS_BADGE = "#run-live .summary-status .badge"
TIMELINE_ROWS = "#run-live ol.timeline > li"


RUN_SOCKET = re.compile(r"/ws/runs/[0-9a-f-]{36}/$")


@dataclass
class Wire:
    """What reached one page over the network: the frames received on its run sockets (with
    when they arrived) and the requests of its live partials polling instead (``?poll=1``,
    which ``static/js/app.js`` starts when a socket fails or closes)."""

    sockets: list[Any] = field(default_factory=list)
    frames: list[tuple[float, str]] = field(default_factory=list)
    polls: list[str] = field(default_factory=list)

    def pushed(self, pattern: str, *, since: float = 0.0) -> list[float]:
        """When frames matching ``pattern`` (a regular expression) arrived after ``since``
        (``time.monotonic``; taken when Playwright hands the event over, so a little late)."""
        return [at for at, text in self.frames if at >= since and re.search(pattern, text)]

    def assert_live(self) -> None:
        """The page's one run socket is still open and it never polled."""
        assert self.polls == [], f"the page polled (its socket failed): {self.polls}"
        assert len(self.sockets) == 1, [ws.url for ws in self.sockets]
        assert not self.sockets[0].is_closed(), "the run's socket closed"


def watch_wire(page: Any) -> Wire:
    """Record ``page``'s run sockets, their frames and its polls from now on (no script in
    the page: Playwright sees them from outside, whatever the CSP)."""
    wire = Wire()

    def on_frame(payload: str | bytes) -> None:
        text = payload if isinstance(payload, str) else payload.decode(errors="replace")
        wire.frames.append((time.monotonic(), text))

    def on_socket(ws: Any) -> None:
        if RUN_SOCKET.search(urlsplit(ws.url).path):
            wire.sockets.append(ws)
            ws.on("framereceived", on_frame)

    def on_request(request: Any) -> None:
        if parse_qs(urlsplit(request.url).query).get("poll") == ["1"]:
            wire.polls.append(request.url)

    page.on("websocket", on_socket)
    page.on("request", on_request)
    return wire


def progress_pattern(value: str = r"[^\"]+") -> str:
    """A pushed ``#run-live`` whose progress bar shows ``value`` (a regular expression)."""
    return rf'id="run-progress-bar"[^>]*\svalue="{value}"'


def state_pattern(status: str) -> str:
    """A pushed ``#run-live`` of a run in ``status`` (its ``data-state`` is the status, then
    any requests still marked on the run: ``runs.run_page.person_state``)."""
    return rf'<section id="run-live"[^>]*\sdata-state="{status}(?:-[a-z]+)*"'


def wait_pushed(
    page: Any, wire: Wire, pattern: str, *, what: str, since: float = 0.0, timeout: float = 5.0
) -> float:
    """Wait until a frame matching ``pattern`` has arrived after ``since``; returns when. The
    page may show a frame's content before Playwright has handed the frame's event over, so
    this polls (letting Playwright deliver its events) rather than asks once."""
    deadline = time.monotonic() + timeout
    while not (arrived := wire.pushed(pattern, since=since)):
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not come by the run's socket within {timeout} s")
        page.wait_for_timeout(25)
    return arrived[0]


def _no_browser(reason: str) -> NoReturn:
    """CI must run these tests; a laptop without Chromium may skip them."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"browser tests cannot run in CI: {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, dict[str, str]]]:
    """One `manage.py serve --workers 2` on its own SQLite data dir; yields its base URL and
    its environment (for management commands against the same data)."""
    env = embedded_env(tmp_path_factory.mktemp("browser-serve"))
    manage(env, "migrate", "-v0")
    manage(env, "shell", "-c", USERS_SCRIPT)
    with serving(env) as running:
        yield running.base, env


@pytest.fixture(scope="module")
def server(served: tuple[str, dict[str, str]]) -> str:
    return served[0]


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not Path(CHROMIUM).exists():
        _no_browser(f"Chromium not found at {CHROMIUM} (apt-get install chromium)")
    try:
        from playwright.sync_api import Error, sync_playwright
    except ImportError:
        _no_browser("playwright is not installed (pip install -e '.[dev]')")
    with sync_playwright() as pw:
        try:
            chromium = pw.chromium.launch(
                executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
            )
        except Error as exc:
            _no_browser(f"Chromium at {CHROMIUM} did not start: {exc}")
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def new_page(browser: Any, request: pytest.FixtureRequest) -> Iterator[Any]:
    """Opens pages in fresh browser contexts (one per person); on failure, each page's last
    state is saved as a screenshot in /tmp."""
    contexts: list[Any] = []

    def open_page() -> Any:
        context = browser.new_context()
        context.set_default_timeout(15_000)
        contexts.append(context)
        return context.new_page()

    failed_before = request.session.testsfailed
    yield open_page
    # The call phase's report has been logged by now: a failed test has been counted.
    if request.session.testsfailed > failed_before:
        name = re.sub(r"\W+", "-", request.node.name)
        for i, context in enumerate(contexts):
            for j, page in enumerate(context.pages):
                path = f"/tmp/agentops-browser-{name}-{i}-{j}.png"
                try:
                    page.screenshot(path=path, full_page=True)
                except Exception as exc:  # a crashed page must not hide the test's failure
                    print(f"no screenshot {path}: {exc}")
                else:
                    print(f"screenshot: {path}")
    for context in contexts:
        context.close()


def sign_in(page: Any, base: str, username: str) -> None:
    from playwright.sync_api import expect

    page.goto(f"{base}/login/")
    page.locator("#id_username").fill(username)
    page.locator("#id_password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator(".account .who")).to_have_text(username)


def start_steps_run(page: Any, base: str, *, n: int, work_ms: int) -> str:
    """Start a ``t-steps`` run from the console's form; returns the run page's URL."""
    from playwright.sync_api import expect

    page.goto(f"{base}/runs/new/")
    # Choosing a workflow loads its input form in place (htmx).
    page.locator("#id_workflow").select_option("t-steps")
    form = page.locator("#start-form form")
    expect(form.locator("#id_input-n")).to_be_visible()
    expect(form.locator("#id_team option:checked")).to_have_text("alpha")
    form.locator("#id_input-n").fill(str(n))
    form.locator("#id_input-work_ms").fill(str(work_ms))
    form.get_by_role("button", name="Start run").click()
    page.wait_for_url(re.compile(r"/runs/[0-9a-f-]{36}/$"))
    expect(page.locator(".toast", has_text="Started t-steps")).to_be_visible()
    # Anything that reloads or navigates the page from here on drops this marker.
    page.evaluate("window.__sameDocument = true")
    return page.url


def status(word: str) -> re.Pattern[str]:
    """A status badge's text (shown as the status value, in any case)."""
    return re.compile(rf"^\s*{word}\s*$", re.IGNORECASE)


def still_same_document(page: Any) -> bool:
    return page.evaluate("window.__sameDocument === true")


def wait_more_rows(page: Any, than: int) -> int:
    """Wait until the timeline has more than ``than`` rows; returns how many it has."""
    handle = page.wait_for_function(
        "([sel, n]) => { const k = document.querySelectorAll(sel).length; return k > n && k; }",
        arg=[TIMELINE_ROWS, than],
        timeout=LIVE_TIMEOUT_MS,
    )
    return int(handle.json_value())


def wait_more_progress(page: Any, than: float) -> float:
    """Wait until the progress bar's value is above ``than``; returns it."""
    handle = page.wait_for_function(
        "([n]) => { const bar = document.querySelector('#run-progress-bar');"
        " const v = bar ? Number(bar.value) : -1; return v > n && v; }",
        arg=[than],
        timeout=LIVE_TIMEOUT_MS,
    )
    return float(handle.json_value())


def test_a_started_run_advances_live_until_it_succeeds(new_page: Any, server: str) -> None:
    from playwright.sync_api import expect

    page = new_page()
    sign_in(page, server, "olive")
    wire = watch_wire(page)
    start_steps_run(page, server, n=15, work_ms=300)

    # The progress bar and the step timeline grow, pushed to the page while we watch.
    first_value = wait_more_progress(page, 0)
    first_rows = wait_more_rows(page, 0)
    later_value = wait_more_progress(page, first_value)
    assert later_value > first_value
    assert wait_more_rows(page, first_rows) > first_rows
    # ...by the run's socket: the value shown came in one of its frames, and nothing polled.
    shown = page.locator("#run-progress-bar").get_attribute("value")
    assert shown is not None and float(shown) >= later_value
    wire.assert_live()
    wait_pushed(page, wire, progress_pattern(re.escape(shown)), what=f"progress {shown}")

    expect(page.locator(STATUS_BADGE)).to_have_text(status("succeeded"), timeout=LIVE_TIMEOUT_MS)
    expect(page.locator(RUN_LIVE).get_by_text("Progress: 15 of 15")).to_be_visible()
    expect(page.locator("#run-progress-bar")).to_have_attribute("value", "100")
    expect(page.locator(TIMELINE_ROWS)).to_have_count(15)
    expect(page.locator(f"{TIMELINE_ROWS}.step-completed")).to_have_count(15)
    wait_pushed(page, wire, state_pattern("succeeded"), what="the end of the run")
    pushed_values = {
        v for _, text in wire.frames for v in re.findall(progress_pattern('([^"]+)'), text)
    }
    assert len(pushed_values) >= 3, f"the bar moved by pushes only to {sorted(pushed_values)}"
    wire.assert_live()
    assert still_same_document(page), "the page was reloaded"


def test_the_demo_digest_started_from_the_console_is_followed_to_its_result(
    new_page: Any, server: str
) -> None:
    """The demo workflow a new user finds first: started from the form with its defaults
    (but more files, so it lasts a moment, within its budget), followed live to its result."""
    from playwright.sync_api import expect

    page = new_page()
    sign_in(page, server, "olive")
    wire = watch_wire(page)
    page.goto(f"{server}/runs/new/")
    page.locator("#id_workflow").select_option("digest")
    form = page.locator("#start-form form")
    expect(form.locator("#id_input-limit")).to_have_value("25")  # the schema's default
    form.locator("#id_input-limit").fill("60")
    form.get_by_role("button", name="Start run").click()
    page.wait_for_url(re.compile(r"/runs/[0-9a-f-]{36}/$"))
    page.evaluate("window.__sameDocument = true")

    expect(page.locator(STATUS_BADGE)).to_have_text(status("succeeded"), timeout=LIVE_TIMEOUT_MS)
    wait_pushed(page, wire, state_pattern("succeeded"), what="the end of the digest")
    pushed = {v for _, text in wire.frames for v in re.findall(progress_pattern('([^"]+)'), text)}
    assert len(pushed) >= 2, f"the bar moved by pushes only to {sorted(pushed)}"
    expect(page.locator(RUN_LIVE)).to_contain_text('"files": 60')
    wire.assert_live()
    assert still_same_document(page), "the page was reloaded"


def test_cancelling_a_running_run_from_its_page(new_page: Any, server: str) -> None:
    from playwright.sync_api import expect

    page = new_page()
    sign_in(page, server, "olive")
    wire = watch_wire(page)
    start_steps_run(page, server, n=200, work_ms=200)
    expect(page.locator(STATUS_BADGE)).to_have_text(status("running"), timeout=LIVE_TIMEOUT_MS)
    wait_more_rows(page, 0)

    page.locator(RUN_LIVE).get_by_role("link", name="Cancel run…").click()
    confirm = page.get_by_role("alertdialog", name="Cancel this run?")
    expect(confirm).to_be_visible()
    confirm.get_by_role("button", name="Yes, cancel the run").click()
    # (Success toasts fade after 8 s: look for it first.)
    expect(page.locator(".toast", has_text="Cancellation requested")).to_be_visible()

    # The answer to the click says "requested"; the run's end comes by its socket.
    wait_pushed(
        page,
        wire,
        state_pattern("cancelled"),
        what="the cancellation",
        timeout=LIVE_TIMEOUT_MS / 1000,
    )
    expect(page.locator(STATUS_BADGE)).to_have_text(status("cancelled"))
    expect(page.locator(RUN_LIVE).get_by_role("link", name="Cancel run…")).to_have_count(0)
    expect(confirm).to_have_count(0)
    # Stopped long before its 200 steps.
    assert page.locator(TIMELINE_ROWS).count() < 200
    wire.assert_live()
    assert still_same_document(page), "the page was reloaded"


def test_without_its_socket_a_run_page_keeps_following_the_run_after_an_action(
    new_page: Any, server: str
) -> None:
    """With the run's socket refused, the page polls; the answer to a click replaces the
    live partial with one that does not poll, and the page must poll again (else it would
    stand at "stopping" until the socket's next reconnect, up to a minute away)."""
    from playwright.sync_api import expect

    page = new_page()
    page.route_web_socket(RUN_SOCKET, lambda ws: ws.close())
    sign_in(page, server, "olive")
    wire = watch_wire(page)
    start_steps_run(page, server, n=200, work_ms=200)
    expect(page.locator("#run-live[hx-trigger='every 2s']")).to_have_count(1)
    expect(page.locator(STATUS_BADGE)).to_have_text(status("running"), timeout=LIVE_TIMEOUT_MS)

    page.locator(RUN_LIVE).get_by_role("link", name="Cancel run…").click()
    confirm = page.get_by_role("alertdialog", name="Cancel this run?")
    confirm.get_by_role("button", name="Yes, cancel the run").click()
    expect(page.locator(".toast", has_text="Cancellation requested")).to_be_visible()
    polled_before = len(wire.polls)
    # Polling again, it sees the run stop (the socket never brought a frame).
    expect(page.locator(STATUS_BADGE)).to_have_text(status("cancelled"), timeout=LIVE_TIMEOUT_MS)
    assert len(wire.polls) > polled_before and wire.frames == []
    assert still_same_document(page), "the page was reloaded"


def test_signing_out_in_one_tab_sends_the_others_to_the_sign_in_page(
    new_page: Any, server: str
) -> None:
    """The run page's socket is closed when its session is signed out of (elsewhere); the
    page then polls, and its first poll sends it to the sign-in page."""
    from playwright.sync_api import expect

    watching = new_page()
    sign_in(watching, server, "olive")
    url = start_steps_run(watching, server, n=200, work_ms=200)
    expect(watching.locator(STATUS_BADGE)).to_have_text(status("running"), timeout=LIVE_TIMEOUT_MS)
    other_tab = watching.context.new_page()  # the same browser: the same session
    other_tab.goto(url)
    other_tab.locator(".account").get_by_role("button", name=re.compile("sign out", re.I)).click()
    expect(other_tab).to_have_url(re.compile(r"/login/"))
    expect(watching).to_have_url(re.compile(r"/login/\?next="), timeout=LIVE_TIMEOUT_MS)


def test_another_team_sees_none_of_it(new_page: Any, server: str) -> None:
    from playwright.sync_api import expect

    olive = new_page()
    sign_in(olive, server, "olive")
    run_url = start_steps_run(olive, server, n=1, work_ms=0)
    run_id = run_url.rstrip("/").rsplit("/", 1)[-1]
    olive.goto(f"{server}/runs/")
    expect(olive.locator(f'table.runs a[href="/runs/{run_id}/"]')).to_have_count(1)

    oscar = new_page()
    sign_in(oscar, server, "oscar")
    oscar.goto(f"{server}/runs/")
    expect(oscar.get_by_role("heading", name="Runs", exact=True)).to_be_visible()
    expect(oscar.locator("table.runs a.run-link")).to_have_count(0)
    expect(oscar.locator("table.runs")).to_contain_text("No runs match.")
    expect(oscar.locator("table.runs")).not_to_contain_text("Alpha")

    response = oscar.goto(run_url)
    assert response is not None and response.status == 404
    expect(oscar.get_by_role("heading", name="Not found")).to_be_visible()
    expect(oscar.locator(RUN_LIVE)).to_have_count(0)
    expect(oscar.locator("body")).not_to_contain_text(run_id)

    response = oscar.goto(f"{run_url}confirm-cancel/")
    assert response is not None and response.status == 404


def test_a_page_whose_pushes_are_lost_fetches_itself_when_quiet(new_page: Any, server: str) -> None:
    """The socket stays open but its pushes after the first are lost on the way (as a
    best-effort channel layer may lose them): the page, hearing nothing for a while, fetches
    its live part once and shows the teammate's pause anyway, without starting to poll."""
    from playwright.sync_api import expect

    olive = new_page()
    sign_in(olive, server, "olive")
    run_url = start_steps_run(olive, server, n=300, work_ms=200)
    forwarded: list[str] = []

    def lossy(ws: Any) -> None:
        server_side = ws.connect_to_server()

        def first_only(message: str | bytes) -> None:
            if not forwarded:
                forwarded.append(str(message))
                ws.send(message)

        server_side.on_message(first_only)

    olive.route_web_socket(RUN_SOCKET, lossy)
    olive.goto(run_url)
    expect(olive.locator(STATUS_BADGE)).to_have_text(status("running"), timeout=LIVE_TIMEOUT_MS)
    olive.evaluate("document.body.setAttribute('data-quiet-refresh-ms', '1500')")
    wire = watch_wire(olive)

    otto = new_page()
    sign_in(otto, server, "otto")
    otto.goto(run_url)
    otto.locator(RUN_LIVE).get_by_role("button", name="Pause").click()
    expect(otto.locator(STATUS_BADGE)).to_have_text(status("paused"), timeout=LIVE_TIMEOUT_MS)

    expect(olive.locator(STATUS_BADGE)).to_have_text(status("paused"), timeout=LIVE_TIMEOUT_MS)
    assert len(forwarded) == 1, "pushes after the first were meant to be lost"
    assert wire.polls == [], "the page started polling instead"


# Finds the run's live part and sets its version in one script. A locator's evaluate finds
# the element in one call and runs its script in another: a push that replaced the part in
# between (a late repeat of the last state, say) would leave the version on the element it
# replaced, off the page, and the next answer would be compared with the push's version.
SET_VERSION_JS = "v => document.getElementById('run-live').setAttribute('data-version', v)"


def test_toasts_after_actions_and_an_older_answer_never_hides_a_newer_state(
    new_page: Any, server: str
) -> None:
    from playwright.sync_api import expect

    olive = new_page()
    sign_in(olive, server, "olive")
    olive_wire = watch_wire(olive)
    run_url = start_steps_run(olive, server, n=300, work_ms=200)
    expect(olive.locator(STATUS_BADGE)).to_have_text(status("running"), timeout=LIVE_TIMEOUT_MS)
    wait_more_rows(olive, 0)

    # A teammate pauses the run from their own page...
    otto = new_page()
    sign_in(otto, server, "otto")
    otto.goto(run_url)
    expect(otto.locator(STATUS_BADGE)).to_have_text(status("running"))
    clicked = time.monotonic()
    otto.locator(RUN_LIVE).get_by_role("button", name="Pause").click()
    # ...and within a second the person watching sees it, and is told who did it, by a push
    # on her page's socket (a page that polled would take up to 2 s: it must not have).
    expect(olive.locator(STATUS_BADGE)).to_have_text(status("paused"), timeout=PUSH_WITHIN_S * 1000)
    expect(olive.locator(".toast-info", has_text="(by otto)")).to_be_visible(
        timeout=PUSH_WITHIN_S * 1000
    )
    seen_after = time.monotonic() - clicked
    assert seen_after < PUSH_WITHIN_S, f"the pause was shown {seen_after:.2f} s on"
    olive_wire.assert_live()
    arrived = wait_pushed(
        olive, olive_wire, state_pattern("paused"), since=clicked, what="otto's pause"
    )
    assert arrived - clicked < PUSH_WITHIN_S, f"the pause was pushed {arrived - clicked:.2f} s on"
    # He gets a toast of his own.
    expect(
        otto.locator(".toast-success", has_text=re.compile("Pause requested|Run paused"))
    ).to_be_visible()

    # The race, made certain: the page already shows a state newer than any answer.
    live = olive.locator(RUN_LIVE)
    olive.evaluate(SET_VERSION_JS, "9007199254740991-0")
    live.get_by_role("button", name="Resume").click()
    expect(olive.locator(".toast-success", has_text="Run resumed.")).to_be_visible()
    assert still_same_document(olive), "the resume reloaded the page instead of an htmx swap"
    expect(otto.locator(STATUS_BADGE)).to_have_text(status("running"), timeout=LIVE_TIMEOUT_MS)
    expect(otto.locator(".toast-info", has_text="(by olive)")).to_be_visible()
    # The answer and the pushes since are older than what the page shows: not swapped in.
    expect(live).to_have_attribute("data-version", "9007199254740991-0")
    expect(olive.locator(STATUS_BADGE)).to_have_text(status("paused"))
    # With an ordinary version again, the next push brings the page up to date.
    olive.evaluate(SET_VERSION_JS, "0-0")
    expect(olive.locator(STATUS_BADGE)).to_have_text(status("running"), timeout=LIVE_TIMEOUT_MS)
    # Her own actions never announce her to herself.
    expect(olive.locator(".toast-info", has_text="(by olive)")).to_have_count(0)

    olive.locator(RUN_LIVE).get_by_role("link", name="Cancel run…").click()
    olive.get_by_role("alertdialog", name="Cancel this run?").get_by_role(
        "button", name="Yes, cancel the run"
    ).click()
    expect(olive.locator(STATUS_BADGE)).to_have_text(status("cancelled"), timeout=LIVE_TIMEOUT_MS)
    olive_wire.assert_live()
    assert still_same_document(olive), "the page was reloaded"


# A live partial as a push would bring it: the page's own, with another state and action.
SPLIT_PUSH_JS = """
([state, changedAt, by]) => {
    const live = document.getElementById("run-live");
    const next = live.cloneNode(true);
    const [events, micros] = live.dataset.version.split("-").map(Number);
    next.dataset.version = `${events + 1}-${micros}`;
    next.dataset.state = state;
    next.dataset.stateLabel = state;
    next.dataset.changedAt = String(changedAt);
    next.dataset.changedBy = by;
    next.setAttribute("hx-swap-oob", "true");
    htmx.swap(live, next.outerHTML, {swapStyle: "none"});
}
"""


def test_a_change_whose_state_and_action_come_in_two_pushes_is_told_once(
    new_page: Any, server: str
) -> None:
    """A render reads the run, then its events: one made as a teammate acts may bring their
    action with the state from before it, and the next push the state it brought. The page
    tells who changed the run once the state has come, and only then."""
    from playwright.sync_api import expect

    page = new_page()
    sign_in(page, server, "olive")
    start_steps_run(page, server, n=2, work_ms=10)
    expect(page.locator(STATUS_BADGE)).to_have_text(status("succeeded"), timeout=LIVE_TIMEOUT_MS)
    told = page.locator(".toast-info", has_text="(by zed)")
    at = int(page.locator(RUN_LIVE).get_attribute("data-changed-at") or 0)

    # The action first, with the state as it was: nothing to tell yet...
    page.evaluate(SPLIT_PUSH_JS, ["succeeded", at + 10, "user:zed"])
    expect(page.locator(RUN_LIVE)).to_have_attribute("data-changed-at", str(at + 10))
    expect(told).to_have_count(0)
    # ...then the state it brought: told once.
    page.evaluate(SPLIT_PUSH_JS, ["paused", at + 10, "user:zed"])
    expect(told).to_have_count(1)
    expect(told).to_have_text(re.compile("This run is now paused"))
    page.evaluate(SPLIT_PUSH_JS, ["paused", at + 10, "user:zed"])
    expect(told).to_have_count(1)

    # An action that changed no state (a budget raised, say), and the next push shows none
    # either: a change of state after that is the run's own, not put down to anyone.
    page.evaluate(SPLIT_PUSH_JS, ["paused", at + 20, "user:zed"])
    page.evaluate(SPLIT_PUSH_JS, ["paused", at + 20, "user:zed"])
    page.evaluate(SPLIT_PUSH_JS, ["running", at + 20, "user:zed"])
    expect(page.locator(RUN_LIVE)).to_have_attribute("data-state", "running")
    expect(told).to_have_count(1)
    # The action and its state in one push: told at once.
    page.evaluate(SPLIT_PUSH_JS, ["paused", at + 30, "user:zed"])
    expect(told).to_have_count(2)
    # The viewer's own actions never announce her to herself, in one push or two.
    page.evaluate(SPLIT_PUSH_JS, ["paused", at + 40, "user:olive"])
    page.evaluate(SPLIT_PUSH_JS, ["running", at + 40, "user:olive"])
    expect(page.locator(RUN_LIVE)).to_have_attribute("data-state", "running")
    expect(page.locator(".toast-info", has_text="(by olive)")).to_have_count(0)
    expect(told).to_have_count(2)


START_FOR_OTTO = textwrap.dedent(
    """
    from django.contrib.auth.models import User
    from runs.models import Run

    otto = User.objects.get(username="otto")
    run, _ = Run.start("t-noop", {}, team="alpha", actor="user:otto", user=otto)
    print(run.pk)
    """
)
NOTIFY_OTTO = textwrap.dedent(
    """
    from django.contrib.auth.models import User
    from notifications.models import Message

    Message.objects.create(
        user=User.objects.get(username="otto"), channel="in_app", subject="Polled",
        text="Polled", status="sent",
    )
    """
)


def test_without_websockets_the_list_and_the_bell_poll(
    new_page: Any, served: tuple[str, dict[str, str]]
) -> None:
    """A browser whose WebSockets are refused (a proxy that does not pass them) still sees
    new runs in the list and its unread count in the bell: both poll."""
    from playwright.sync_api import expect

    base, env = served
    page = new_page()
    refused: list[str] = []

    def refuse(ws: Any) -> None:
        refused.append(ws.url)
        ws.close()

    page.route_web_socket(re.compile(r"/ws/"), refuse)
    sign_in(page, base, "otto")
    page.goto(f"{base}/runs/")
    page.evaluate("window.__sameDocument = true")
    expect(page.locator("#runs-table[hx-trigger='every 2s']")).to_have_count(1)
    expect(page.locator("#notifications-bell[hx-trigger='every 15s']")).to_have_count(1)
    assert any("/ws/runs/" in url for url in refused)
    assert any("/ws/notifications/" in url for url in refused)

    # The bell first: the run below brings notifications of its own.
    expect(page.locator("#notifications-bell")).to_be_hidden()
    manage(env, "shell", "-c", NOTIFY_OTTO)
    expect(page.locator("#notifications-bell")).to_have_text(
        re.compile(r"^\s*1\s+unread"), timeout=LIVE_TIMEOUT_MS + 15_000
    )
    run_id = manage(env, "shell", "-c", START_FOR_OTTO).strip().splitlines()[-1]
    expect(page.locator(f"#runs-table a[href='/runs/{run_id}/']")).to_be_visible(
        timeout=LIVE_TIMEOUT_MS
    )
    assert still_same_document(page), "the page was reloaded"


def test_bulk_selection_counts_what_is_ticked(
    new_page: Any, served: tuple[str, dict[str, str]]
) -> None:
    from playwright.sync_api import expect

    base, env = served
    for _ in range(2):
        manage(env, "shell", "-c", START_FOR_OTTO)
    page = new_page()
    sign_in(page, base, "otto")
    page.goto(f"{base}/runs/")
    boxes = page.locator("input.row-select")
    expect(boxes.nth(1)).to_be_visible()
    shown = boxes.count()
    count = page.locator("#bulk-count")
    boxes.nth(0).check()
    boxes.nth(1).check()
    expect(count).to_have_text("2 runs selected:")
    page.locator("#select-all").check()
    expect(count).to_have_text(f"{shown} runs selected:")
    boxes.nth(0).uncheck()
    expect(count).to_have_text(f"{shown - 1} runs selected:")
    assert page.locator("#select-all").evaluate("el => el.indeterminate")

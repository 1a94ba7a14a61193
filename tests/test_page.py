"""The monitoring page at `/`, in a real headless Chromium (Debian's) driven by Playwright, against the real
service on local Ray with a live synthetic camera.

Each state the page reaches is screenshotted at desktop and phone widths into $CUBESTREAM_ARTIFACTS/screenshots
(default: artifacts/screenshots under the repository root), which CI keeps. Waits poll the page for a
state with a generous deadline; nothing asserts on how long anything took.
"""
import os
import shutil
import time
from pathlib import Path

import pytest
import ray

from actors.client import Client
from actors.server import Service
from configs import load_config
from conftest import need

pytestmark = pytest.mark.timeout(300)

CHROMIUM = os.environ.get("CUBESTREAM_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                  "--disable-sync", "--no-first-run", "--disable-dev-shm-usage"]
SHOTS = Path(os.environ.get("CUBESTREAM_ARTIFACTS") or Path(__file__).resolve().parents[1] / "artifacts") / "screenshots"
DESKTOP = {"width": 1400, "height": 900}
PHONE = {"width": 390, "height": 844}
ADMIN, VIEWER = "admin-secret", "viewer-secret"
SYNTH = "synth://?seed=3&fps=4&speed=2"  # twice real time: cubes form sooner
WAIT_MS = 90_000


class Server:
    """The service, stoppable and startable again on the same port (what the page sees as the server going
    away and coming back). Ray stays up in between: only the gateway and the controller's actors go."""

    def __init__(self, cfg):
        self.cfg, self.svc, self.port = cfg, None, 0

    def start(self) -> "Server":
        self.svc = Service(self.cfg, token=ADMIN, port=self.port).start()
        self.port = self.svc.port
        return self

    def stop(self) -> None:
        self.svc.close()

    @property
    def url(self) -> str:
        return self.svc.url


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    cfg = load_config(overrides={
        "runtime": {"snapshot_dir": str(tmp_path_factory.mktemp("snapshots")), "request_timeout": 60.0,
                    "health_interval": 0.5},
        "server": {"port": 0},
    })
    owns_ray = not ray.is_initialized()
    if owns_ray:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    srv = Server(cfg).start()
    yield srv
    srv.stop()
    if owns_ray:
        ray.shutdown()


@pytest.fixture(scope="module")
def browser():
    need(shutil.which(CHROMIUM) is not None, f"Chromium at {CHROMIUM} (Debian's chromium package)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        need(False, "the playwright Python package (the test extra)")
    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        yield b
        b.close()


@pytest.fixture
def page(browser, server):
    context = browser.new_context(viewport=DESKTOP)
    page = context.new_page()
    page.set_default_timeout(WAIT_MS)
    outside = []  # every request the page makes must go to the gateway
    page.on("request", lambda r: r.url.startswith(server.url) or r.url.startswith(("blob:", "data:")) or outside.append(r.url))
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    yield page
    context.close()
    assert not outside, f"the page reached beyond the gateway: {outside}"
    assert not errors, f"the page threw: {errors}"


def shoot(page, name: str) -> None:
    """Screenshots of the page as it is, at desktop width and at phone width."""
    page.screenshot(path=str(SHOTS / f"{name}-desktop.png"), full_page=True)
    page.set_viewport_size(PHONE)
    page.wait_for_timeout(200)  # a relayout
    page.screenshot(path=str(SHOTS / f"{name}-phone.png"), full_page=True)
    page.set_viewport_size(DESKTOP)


def until(cond, what: str, deadline: float = WAIT_MS / 1000):
    """Polls `cond` (which reads the page through Playwright) until it is truthy. The page's
    Content-Security-Policy forbids eval, so Playwright's wait_for_function cannot run in it."""
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        if value := cond():
            return value
        time.sleep(0.25)
    raise AssertionError(f"gave up waiting for {what}")


def sign_in(page, url: str, token: str) -> None:
    page.goto(url + "/")
    page.get_by_label("Access token").fill(token)
    page.get_by_role("button", name="Sign in").click()


def test_a_wrong_token_gets_a_clear_message(page, server):
    sign_in(page, server.url, "not-the-token")
    message = page.locator("#signin-msg")
    message.filter(has_text="refused").wait_for()
    assert "401" in message.inner_text()
    assert page.locator("#app").is_hidden() and page.get_by_label("Access token").is_visible()
    shoot(page, "01-wrong-token")


def test_admin_watches_a_live_stream_and_asks(page, server):
    sign_in(page, server.url, ADMIN)
    page.locator("#role").filter(has_text="admin").wait_for()
    assert page.evaluate("sessionStorage.getItem('cubestream.token')") == ADMIN  # the tab keeps it, no URL holds it
    assert ADMIN not in page.url

    # an admin adds the stream from the page; the server's refusal of a bad one is shown
    page.get_by_label("Stream id").fill("cam1")
    page.get_by_label("Source").fill(SYNTH)
    page.get_by_role("button", name="Add stream").click()
    card = page.locator('[data-stream="cam1"]')
    card.locator(".state").filter(has_text="connected").wait_for()
    page.get_by_label("Stream id").fill("cam1")
    page.get_by_label("Source").fill(SYNTH)
    page.get_by_role("button", name="Add stream").click()
    page.locator("#add-msg").filter(has_text="409").wait_for()
    assert "exists" in page.locator("#add-msg").inner_text()
    page.get_by_label("Stream id").fill("bad")
    page.get_by_label("Source").fill("ftp://camera/x")
    page.get_by_role("button", name="Add stream").click()
    page.locator("#add-msg").filter(has_text="400").wait_for()
    shoot(page, "02-add-refused")

    # the timeline fills and grows live; the stream's card shows its newest thumbnail and counters
    page.get_by_role("button", name="Show stream cam1").click()
    timeline = page.locator("#timeline")
    entries = lambda: int(timeline.get_attribute("data-entries") or 0)  # noqa: E731
    before = until(lambda: entries() >= 3 and entries(), "three entries on the timeline")
    until(lambda: entries() > before, "the timeline to grow")
    assert timeline.locator("button.cube").count() == entries()
    card.locator("img.thumb[src^='blob:']").wait_for()
    assert int(card.locator("dt:text-is('frames') + dd").inner_text()) > 0
    assert timeline.locator("button.cube[data-level='0']").count() >= 1
    shoot(page, "03-live-stream")

    # an entry, clicked: its thumbnail and span; the keyboard moves along the timeline
    first = timeline.locator("button.cube").first
    first.click()
    page.locator("#entry-img[src^='blob:']").wait_for()
    caption = page.locator("#entry-caption").inner_text()
    assert "entry" in caption and "–" in caption
    first.press("ArrowRight")
    until(lambda: page.locator("#entry-caption").inner_text() != caption, "the next entry's caption")
    assert page.locator("#timeline button.cube:focus").count() == 1
    shoot(page, "04-entry")

    # a question: the answer, and its cited spans highlighted on the timeline
    page.get_by_label("Question about this stream").fill("what colour is the square ?")
    page.get_by_label("Question about this stream").press("Enter")
    page.locator("#answer-text").wait_for()
    assert page.locator("#answer-text").inner_text().strip()
    page.locator("#timeline button.cube.cited").first.wait_for()
    cited = page.locator("#citations button")
    assert cited.count() >= 1
    answer = Client(server.url, ADMIN).ask("cam1", "what colour is the square ?")
    assert answer["citations"], "the API cites spans too"
    shoot(page, "05-answer")


def test_the_server_going_away_shows_disconnected_then_recovers(page, server):
    sign_in(page, server.url, ADMIN)
    page.locator("#conn").filter(has_text="connected").wait_for()
    server.stop()
    try:
        page.locator("#conn").filter(has_text="disconnected").wait_for()
        assert page.locator("#offline").is_visible()
        shoot(page, "06-disconnected")
    finally:
        server.start()
    page.locator("#conn").filter(has_text="connected").filter(has_not_text="dis").wait_for()
    assert page.locator("#app").is_visible() and page.locator("#offline").is_hidden()  # still signed in
    Client(server.url, ADMIN).add("cam2", SYNTH)  # a new runtime: its streams appear on the page as they come
    page.locator('[data-stream="cam2"] .state').filter(has_text="connected").wait_for()
    shoot(page, "07-recovered")

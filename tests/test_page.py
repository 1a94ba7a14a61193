"""The monitoring page at `/`, in a real headless Chromium (Debian's) driven by Playwright, against the real
service on local Ray with a live synthetic camera.

Each state the page reaches is screenshotted at desktop and phone widths into $CUBESTREAM_ARTIFACTS/screenshots
(default: artifacts/screenshots under the repository root), which CI keeps. Waits poll the page for a
state with a generous deadline; nothing asserts on how long anything took.
"""
import os
import re
import shutil
import time
from pathlib import Path

import pytest
from actors.client import Client
from actors.server import Service
from configs import load_config
from conftest import need
from tcp_relay import TcpRelay

pytestmark = pytest.mark.timeout(300)

CHROMIUM = os.environ.get("CUBESTREAM_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                  "--disable-sync", "--no-first-run", "--disable-dev-shm-usage"]
SHOTS = Path(os.environ.get("CUBESTREAM_ARTIFACTS") or Path(__file__).resolve().parents[1] / "artifacts") / "screenshots"
DESKTOP = {"width": 1400, "height": 900}
PHONE = {"width": 390, "height": 844}
ADMIN, VIEWER = "admin-secret", "viewer-secret"
SYNTH = "synth://?seed=3&fps=4&speed=3"  # three times real time: cubes form sooner
DEAD_CAMERA = "rtsp://127.0.0.1:9/none"  # nothing listens on the discard port
WAIT_MS = 90_000


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    cfg = load_config(overrides={
        "runtime": {"snapshot_dir": str(tmp_path_factory.mktemp("snapshots")), "request_timeout": 60.0,
                    "health_interval": 0.5},
        "server": {"port": 0},
        "memory": {"token_budget": 20},  # a few cubes, then merges: the timeline shows several levels soon
        "api": {"viewer_tokens": [VIEWER]},
    })
    with Service(cfg, num_cpus=2, token=ADMIN) as svc:
        yield svc


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


@pytest.fixture(scope="module")
def cam1(server):
    """A live synthetic stream with a few cubes in its memory."""
    client = Client(server.url, ADMIN)
    if "cam1" not in [s["id"] for s in client.streams()]:
        client.add("cam1", SYNTH)
    until(lambda: len(client.timeline("cam1")) >= 3, "three cubes of cam1")
    return "cam1"


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
    served = page.goto(server.url + "/")
    assert "default-src 'self'" in served.headers["content-security-policy"]  # nothing from any other origin
    page.keyboard.type("not-the-token")  # the token field has the focus: keyboard only
    page.keyboard.press("Enter")
    message = page.locator("#signin-msg")
    message.filter(has_text="refused").wait_for()
    assert "401" in message.inner_text()
    assert page.locator("#app").is_hidden() and page.get_by_label("Access token").is_visible()
    shoot(page, "01-wrong-token")


def test_an_admin_adds_and_removes_a_stream_and_sees_refusals(page, server):
    sign_in(page, server.url, ADMIN)
    page.locator("#role").filter(has_text="admin").wait_for()
    assert page.evaluate("sessionStorage.getItem('cubestream.token')") == ADMIN  # the tab keeps it, no URL holds it
    assert ADMIN not in page.url

    # a camera that does not answer: the page shows it reconnecting, with the source's last error
    page.get_by_label("Stream id").fill("door")
    page.get_by_label("Source").fill(DEAD_CAMERA)
    page.get_by_label("Source").press("Enter")
    card = page.locator('[data-stream="door"]')
    card.locator(".state").filter(has_text="reconnecting").wait_for()
    card.locator(".error").filter(has_text="last error").wait_for()
    # the server's refusals, as it words them
    page.get_by_label("Stream id").fill("door")
    page.get_by_label("Source").fill(DEAD_CAMERA)
    page.get_by_role("button", name="Add stream").click()
    page.locator("#add-msg").filter(has_text="409").wait_for()
    assert "exists" in page.locator("#add-msg").inner_text()
    page.get_by_label("Stream id").fill("bad")
    page.get_by_label("Source").fill("ftp://camera/x")
    page.get_by_role("button", name="Add stream").click()
    page.locator("#add-msg").filter(has_text="400").wait_for()
    assert "unsupported source" in page.locator("#add-msg").inner_text()
    shoot(page, "02-add-refused")

    page.once("dialog", lambda d: d.accept())  # "Remove stream door? Its memory is deleted."
    page.get_by_role("button", name="Remove stream door").click()
    card.wait_for(state="detached")
    assert "door" not in [s["id"] for s in Client(server.url, ADMIN).streams()]


def test_a_live_stream_its_growing_timeline_and_an_answer_with_cited_spans(page, server, cam1):
    sign_in(page, server.url, ADMIN)
    card = page.locator(f'[data-stream="{cam1}"]')
    card.locator(".state").filter(has_text="connected").wait_for()
    page.keyboard.press("Tab")  # from the streams' heading, which has the focus after sign-in
    assert page.get_by_role("button", name=f"Show stream {cam1}").evaluate("b => b === document.activeElement")
    page.keyboard.press("Enter")
    page.locator("#detail-h").filter(has_text=f"Timeline of {cam1}").wait_for()
    timeline = page.locator("#timeline")
    until(lambda: int(timeline.get_attribute("data-entries") or 0) >= 3, "three entries on the timeline")
    end = float(timeline.get_attribute("data-end"))
    until(lambda: float(timeline.get_attribute("data-end")) > end, "the timeline to grow")
    until(lambda: timeline.locator("button.cube:not([data-level='0'])").count(), "merged entries (a level above 0)")
    assert timeline.locator("button.cube").count() == int(timeline.get_attribute("data-entries"))
    assert timeline.locator(".lane-label").count() >= 2
    card.locator("img.thumb[src^='blob:']").wait_for()  # its newest thumbnail
    assert int(card.locator("dt:text-is('frames') + dd").inner_text()) > 0
    assert card.locator("dt:text-is('skipped') + dd").inner_text() == "0"  # a synthetic camera is never behind
    shoot(page, "03-live-stream")

    # an entry, clicked: its thumbnail and span; the arrow keys move along the timeline
    first = timeline.locator("button.cube").first
    first.click()
    page.locator("#entry-img[src^='blob:']").wait_for()
    caption = page.locator("#entry-caption").inner_text()
    assert f"{cam1} · entry" in caption and "–" in caption
    first.press("ArrowRight")
    until(lambda: page.locator("#entry-caption").inner_text() != caption, "the next entry's caption")
    assert page.locator("#timeline button.cube:focus").count() == 1
    shoot(page, "04-entry")

    # a question: the answer, and exactly the entries of its cited spans highlighted on the timeline
    question = page.get_by_label("Question about this stream")
    question.fill("what colour is the square ?")
    with page.expect_response(lambda r: r.url.endswith(f"/streams/{cam1}/ask")) as reply:
        question.press("Enter")
    answer = reply.value.json()
    assert answer["citations"]
    page.locator("#answer-text").filter(has_text=answer["text"]).wait_for()
    assert page.locator("#citations button").count() == len(answer["citations"])
    page.locator("#timeline button.cube.cited").first.wait_for()
    cubes = timeline.locator("button.cube")
    spans = [(float(cubes.nth(i).get_attribute("data-start")), float(cubes.nth(i).get_attribute("data-end")),
              "cited" in cubes.nth(i).get_attribute("class")) for i in range(cubes.count())]
    for start, end, cited in spans:
        assert cited == any(start < c["end"] and c["start"] < end or (start, end) == (c["start"], c["end"])
                            for c in answer["citations"])
    shoot(page, "05-answer")

    # every control has a name a screen reader reads out: inputs by their <label>, buttons by text or aria-label
    for i in range(page.locator("input").count()):
        field = page.locator("input").nth(i)
        assert page.locator(f'label[for="{field.get_attribute("id")}"]').count() == 1
    for i in range(page.locator("button").count()):
        button = page.locator("button").nth(i)
        assert (button.get_attribute("aria-label") or button.inner_text()).strip()
    assert all(cubes.nth(i).get_attribute("aria-label").startswith("entry ") for i in range(cubes.count()))


def test_a_viewer_sees_no_admin_controls(page, server, cam1):
    sign_in(page, server.url, VIEWER)
    page.locator("#role").filter(has_text="viewer").wait_for()
    page.reload()  # the tab keeps its token
    page.locator("#role").filter(has_text="viewer").wait_for()
    page.get_by_role("button", name=f"Show stream {cam1}").click()
    page.locator("#watches-empty").wait_for()  # the stream's watches have loaded
    page.locator("#timeline button.cube").first.wait_for()
    assert page.locator(".admin-only:visible").count() == 0
    assert page.get_by_role("button", name=re.compile("Remove|Add stream|Add watch")).count() == 0
    assert page.get_by_label("Stream id").count() == 0 or page.get_by_label("Stream id").is_hidden()
    question = page.get_by_label("Question about this stream")  # a viewer may ask
    question.fill("what colour is the square ?")
    question.press("Enter")
    page.locator("#timeline button.cube.cited").first.wait_for()
    shoot(page, "08-viewer")

    page.get_by_role("button", name="Sign out").click()
    page.get_by_label("Access token").wait_for()
    assert page.evaluate("sessionStorage.getItem('cubestream.token')") is None
    assert page.locator("#app").is_hidden()


def test_an_admin_adds_a_watch_and_its_alert_arrives_live(page, server, cam1):
    sign_in(page, server.url, ADMIN)
    page.get_by_role("button", name=f"Show stream {cam1}").click()
    page.locator("#watches-empty").wait_for()
    page.locator("#alerts-state").filter(has_text="Live").wait_for()  # following the SSE feed
    assert page.locator("#alerts li").count() == 0
    page.get_by_label("Question", exact=True).fill("Is the red square still there?")
    page.get_by_label(re.compile("Answers that fire it")).fill("yes, no")  # fires on the next closed cube
    page.get_by_label(re.compile("Answer choices")).fill("yes, no")
    page.get_by_label(re.compile("Cool-down")).fill("0")
    page.get_by_role("button", name="Add watch").click()
    page.locator("#watches li").filter(has_text="red square").wait_for()
    alert = page.locator("#alerts li").first
    alert.wait_for()  # it arrived over SSE: the list read at sign-in was empty
    alert.locator("img.thumb[src^='blob:']").wait_for()
    assert cam1 in alert.inner_text() and "red square" in alert.inner_text()
    shoot(page, "09-alert")

    alert.get_by_role("button").click()  # its span, on its stream's timeline
    page.locator("#timeline button.cube.cited").first.wait_for()
    page.get_by_role("button", name=re.compile("Remove watch")).click()
    page.locator("#watches-empty").wait_for()
    assert Client(server.url, ADMIN).watches(cam1) == []


def test_search_across_streams_shows_results_with_thumbnails(page, server, cam1):
    sign_in(page, server.url, ADMIN)
    box = page.get_by_label("Search every stream's history")
    box.fill("When did a red circle last enter?")
    with page.expect_response(lambda r: "/search?" in r.url) as reply:
        box.press("Enter")
    found = reply.value.json()
    assert found, "the search found entries"
    results = page.locator("#results li")
    results.first.locator("img.thumb[src^='blob:']").wait_for()
    assert results.count() == len(found)
    assert f"{found[0]['stream']} · " in results.first.inner_text()
    results.first.get_by_role("button").click()
    page.locator("#timeline button.cube.cited").first.wait_for()
    shoot(page, "10-search")


def test_the_server_going_away_shows_disconnected_then_recovers(browser, server, cam1):
    relay = TcpRelay(("127.0.0.1", server.port)).start()  # the page reaches the server through it
    context = browser.new_context(viewport=DESKTOP)
    try:
        page = context.new_page()
        page.set_default_timeout(WAIT_MS)
        errors = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        sign_in(page, relay.url, ADMIN)
        page.locator(f'[data-stream="{cam1}"] .state').filter(has_text="connected").wait_for()
        page.locator("#alerts-state").filter(has_text="Live").wait_for()
        relay.cut()  # the server is gone, as far as the page can tell
        page.locator("#conn").filter(has_text="disconnected").wait_for()
        assert page.locator("#offline").is_visible()
        page.locator(f'[data-stream="{cam1}"] .state').filter(has_text="unknown").wait_for()
        page.locator("#alerts-state").filter(has_text="reconnecting").wait_for()
        shoot(page, "06-disconnected")
        relay.start()  # back, on the same address
        page.locator("#conn").filter(has_text="connected").filter(has_not_text="dis").wait_for()
        assert page.locator("#app").is_visible() and page.locator("#offline").is_hidden()  # still signed in
        page.locator(f'[data-stream="{cam1}"] .state').filter(has_text="connected").wait_for()
        page.locator("#alerts-state").filter(has_text="Live").wait_for()  # the alert feed followed again
        shoot(page, "07-recovered")
        assert not errors, f"the page threw: {errors}"
    finally:
        context.close()
        relay.close()

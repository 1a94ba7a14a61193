"""Watches, events, webhooks, the registry and the OpenAI request checks as plain objects (no Ray).

Webhooks are delivered to real aiohttp servers on 127.0.0.1 and their signatures checked here with hmac.
"""
import asyncio
import hashlib
import hmac
import json
import socket
import time

import pytest
from aiohttp import web

from actors.events import EventLog, Webhooks
from actors.openai_api import ChatError, parse_chat
from actors.registry import Registry
from actors.watches import Watch, WatchError, Watcher, WatchState
from configs import ConfigError, WebhookConfig, load_config

pytestmark = pytest.mark.timeout(60)


# -- hysteresis -----------------------------------------------------------------------------------------

def run(state: WatchState, answers: list[bool], step: float = 4.0, confirm=1, clear_s=8.0, cooldown_s=0.0) -> list[int]:
    """Feed one evaluation per cube of `step` seconds; the indices of the cubes that fired."""
    return [i for i, m in enumerate(answers) if state.update(m, i * step, (i + 1) * step, confirm, clear_s, cooldown_s)]


def test_one_event_over_many_cubes_is_one_alert():
    assert run(WatchState(), [False, True, True, True, True, True, False, False, False]) == [1]


def test_a_flicker_neither_ends_an_event_nor_starts_a_new_one():
    # one non-matching cube (4 s) inside the event is less than clear_s (8 s): still the same event
    assert run(WatchState(), [True, True, False, True, True, False, True]) == [0]


def test_it_rearms_after_clear_s_without_a_match():
    # two non-matching cubes (8 s) clear it: the next match is a new event
    assert run(WatchState(), [True, True, False, False, True, True, False, False, False, True]) == [0, 4, 9]


def test_confirm_wants_matches_in_a_row():
    assert run(WatchState(), [True, False, True, False, True, True, True], confirm=2) == [5]


def test_cooldown_bounds_the_rate_whatever_the_answers():
    fired = run(WatchState(), [True, False, False, True, False, False, True, False, False, True], cooldown_s=20.0)
    assert fired == [0, 6]  # 12 s after the first is within the cool-down; 28 s is not


# -- watch requests -------------------------------------------------------------------------------------

def test_a_watch_without_an_answer_is_a_yes_no_question():
    w = Watch.from_request("cam", {"question": "Is the red circle that entered at t=12s still there?"})
    assert w.answers == ["yes"] and w.options == ["yes", "no"] and w.fires_on(" Yes ") and not w.fires_on("no")


@pytest.mark.parametrize("body, message", [
    ({}, "missing field: question"),
    ({"question": "  "}, "missing field: question"),
    ({"question": "x" * 1001}, "longer than"),
    ({"question": "q?", "colour": "red"}, "unknown field"),
    ({"question": "q?", "answer": 3}, "wrong type"),
    ({"question": "q?", "answer": []}, "non-empty"),
    ({"question": "q?", "answer": [""]}, "non-empty"),
    ({"question": "q?", "answer": "maybe", "options": ["yes", "no"]}, "one of its options"),
    ({"question": "q?", "options": ["yes"]}, "at least two"),
    ({"question": "q?", "confirm": 0}, "confirm"),
    ({"question": "q?", "confirm": True}, "wrong type"),
    ({"question": "q?", "cooldown_s": -1}, "cooldown_s"),
    ({"question": "q?", "window_s": 0}, "window_s"),
    ({"question": "q?", "id": "a/b"}, "watch id"),
    ([], "object"),
])
def test_malformed_watches_are_refused(body, message):
    with pytest.raises(WatchError, match=message):
        Watch.from_request("cam", body)


# -- the watcher ----------------------------------------------------------------------------------------

async def test_watcher_evaluates_every_closed_cube_once_and_publishes_one_alert_per_event():
    """Cubes close every 4 s; an object is in view from 8 s to 40 s and from 60 s to 80 s. The watcher looks
    after every cube at first, then only after every third: it still evaluates each cube, in order."""
    cubes = [{"id": i, "start": 4.0 * i, "end": 4.0 * (i + 1)} for i in range(25)]
    shown = 0
    asked, fired, saves = [], [], []

    async def timeline(stream):
        return cubes[:shown]

    async def ask(stream, question, start, end, options):
        asked.append((start, end))
        return {"text": "1" if 8 < end <= 40 or 60 < end <= 80 else "0"}

    async def publish(f):
        fired.append(f.start)

    w = Watch.from_request("cam", {"question": "How many objects are in view?", "answer": ["1", "2"],
                                   "window_s": 10, "clear_s": 8, "cooldown_s": 0})
    watcher = Watcher({w.id: w}, timeline, ask, publish, on_change=lambda: saves.append(1), poll=0.01)
    for shown in [*range(1, 10), *range(12, 26, 3), 25]:
        await watcher.step("cam", [w])
    assert [end for _, end in asked] == [4.0 * (i + 1) for i in range(25)]  # each cube once, in order
    assert asked[5] == (14.0, 24.0)  # over the newest window_s seconds up to that cube
    assert fired == [8.0, 60.0]
    assert len(saves) == 4  # saved when it fired and when it re-armed, not on every cube


# -- events and webhooks --------------------------------------------------------------------------------

def test_event_log_persists_and_filters(tmp_path):
    log = EventLog(tmp_path / "events.jsonl", kept=3)
    for i in range(5):
        log.append(stream=f"cam{i % 2}", watch="w", question="q", answer="yes", start=i, end=i + 1, entry=i,
                   thumbnail=f"/streams/cam/thumbnails/{i}")
    with open(tmp_path / "events.jsonl", "ab") as f:
        f.write(b'{"id": 6, "tim')  # a line torn by a crash
    again = EventLog(tmp_path / "events.jsonl", kept=3)
    assert [e.id for e in again.list()] == [3, 4, 5]  # the newest `kept`
    assert [e.id for e in again.list(after=3)] == [4, 5] and [e.id for e in again.list(stream="cam1")] == [4]
    assert again.append(stream="cam", watch="w", question="q", answer="a", start=0, end=1, entry=0, thumbnail="").id == 6


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Receiver:
    """A real webhook receiver: records each delivery whose signature checks; `hang` never answers."""

    def __init__(self, secret: str, port: int | None = None, hang: bool = False):
        self.secret, self.port, self.hang = secret, port or free_port(), hang
        self.got: list[dict] = []
        self.bad_signatures = 0
        self.runner: web.AppRunner | None = None

    async def handle(self, request):
        if self.hang:
            await asyncio.sleep(3600)
        body = await request.read()
        ts = request.headers["X-Cubestream-Timestamp"]
        want = "sha256=" + hmac.new(self.secret.encode(), ts.encode() + b"." + body, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(want, request.headers["X-Cubestream-Signature"]):
            self.bad_signatures += 1
            return web.Response(status=401)
        self.got.append(json.loads(body) | {"received": time.time()})
        return web.Response(status=204)

    async def start(self):
        app = web.Application()
        app.router.add_post("/hook", self.handle)
        self.runner = web.AppRunner(app, shutdown_timeout=0.1)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()
        return self

    async def stop(self):
        await self.runner.cleanup()

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}/hook"


async def wait_until(cond, deadline=20.0):
    end = time.monotonic() + deadline
    while not cond():
        assert time.monotonic() < end, "gave up waiting"
        await asyncio.sleep(0.05)


async def test_webhooks_are_signed_retried_and_a_hanging_url_blocks_nothing(tmp_path):
    good = await Receiver("s3cret").start()
    down = Receiver("other")  # not listening yet
    hanging = await Receiver("h", hang=True).start()
    wrong_secret = await Receiver("not-the-secret").start()
    outcomes = []
    hooks = Webhooks([WebhookConfig(good.url, "s3cret"), WebhookConfig(down.url, "other"),
                      WebhookConfig(hanging.url, "h"), WebhookConfig(wrong_secret.url, "s3cret")],
                     timeout=1.0, retries=20, backoff=0.1, backoff_max=0.5,
                     on_result=lambda url, outcome: outcomes.append((url, outcome)))
    log = EventLog(tmp_path / "events.jsonl")
    hooks.start()
    try:
        started = time.monotonic()
        for i in range(3):
            hooks.publish(log.append(stream="cam", watch="w", question="q", answer="yes", start=i, end=i + 1, entry=i,
                                     thumbnail=""))
        assert time.monotonic() - started < 0.5  # publishing never waits on a receiver
        await wait_until(lambda: len(good.got) == 3)
        assert [e["id"] for e in good.got] == [1, 2, 3] and good.bad_signatures == 0
        assert wrong_secret.bad_signatures >= 1 and not wrong_secret.got  # a receiver with another secret refuses them
        await asyncio.sleep(1.0)  # the down URL is failing meanwhile, and retried
        assert (down.url, "failed") in outcomes and not down.got
        await down.start()  # it comes back: the retries deliver everything, in order
        await wait_until(lambda: len(down.got) == 3)
        assert [e["id"] for e in down.got] == [1, 2, 3]
        assert (hanging.url, "failed") in outcomes and not hanging.got  # timed out and retried, delivered nothing
    finally:
        await hooks.close()
        for r in (good, down, hanging, wrong_secret):
            if r.runner is not None:
                await r.stop()


async def test_webhooks_give_up_after_the_retries_and_drop_the_oldest_when_full(tmp_path):
    outcomes = []
    hooks = Webhooks([WebhookConfig(f"http://127.0.0.1:{free_port()}/hook", "s")], timeout=0.5, retries=2,
                     backoff=0.01, backoff_max=0.02, queue_size=2, on_result=lambda url, o: outcomes.append(o))
    log = EventLog(tmp_path / "events.jsonl")
    hooks.start()
    try:
        for i in range(4):
            hooks.publish(log.append(stream="c", watch="w", question="q", answer="a", start=0, end=1, entry=0, thumbnail=""))
        await wait_until(lambda: outcomes.count("gave_up") >= 2)
        assert outcomes.count("dropped") >= 1
    finally:
        await hooks.close()


# -- registry, config, metrics, chat requests -----------------------------------------------------------

def test_registry_round_trip_and_an_unreadable_file_is_set_aside(tmp_path):
    r = Registry(tmp_path / "registry.json")
    r.add_stream("cam1", "synth://?seed=1")
    w = Watch.from_request("cam1", {"question": "q?", "id": "w1"})
    w.state.update(True, 0, 4, 1, 8, 0)
    r.watches["w1"] = w
    r.save()
    again = Registry(tmp_path / "registry.json")
    assert again.streams["cam1"]["source"] == "synth://?seed=1"
    assert again.watches["w1"].question == "q?" and not again.watches["w1"].state.armed
    assert [x.id for x in again.remove_stream("cam1")] == ["w1"] and not Registry(tmp_path / "registry.json").streams
    (tmp_path / "registry.json").write_text("{not json")
    assert Registry(tmp_path / "registry.json").streams == {}
    assert list(tmp_path.glob("registry.json.unreadable-*"))


def test_roles_and_webhooks_in_config():
    cfg = load_config(overrides={"api": {"viewer_tokens": ["v"], "webhooks": [{"url": "http://h/x", "secret": "s"}]}})
    assert cfg.api.webhooks[0].secret == "s"
    with pytest.raises(ConfigError):
        load_config(overrides={"api": {"admin_tokens": ["t"], "viewer_tokens": ["t"]}})
    with pytest.raises(ConfigError):
        load_config(overrides={"api": {"webhooks": [{"url": "ftp://h/x", "secret": "s"}]}})


@pytest.mark.parametrize("body", [
    [], {"messages": [{"role": "user", "content": "q"}]},
    {"model": "gpt-4", "messages": [{"role": "user", "content": "q"}]},
    {"model": "cubestream/", "messages": [{"role": "user", "content": "q"}]},
    {"model": "cubestream/cam", "messages": []},
    {"model": "cubestream/cam", "messages": [{"role": "system", "content": "be brief"}]},
    {"model": "cubestream/cam", "messages": [{"role": "wizard", "content": "q"}]},
    {"model": "cubestream/cam", "messages": [{"role": "user", "content": 3}]},
    {"model": "cubestream/cam", "messages": [{"role": "user", "content": "q"}], "stream": "yes"},
    {"model": "cubestream/cam", "messages": [{"role": "user", "content": "q"}], "temperature": "hot"},
    {"model": "cubestream/cam", "messages": [{"role": "user", "content": "q"}], "start": "now"},
    {"model": "cubestream/cam", "messages": [{"role": "user", "content": "q"}], "tools": []},
])
def test_malformed_chat_requests_are_refused(body):
    with pytest.raises(ChatError):
        parse_chat(body)


def test_chat_request_takes_the_last_user_message():
    r = parse_chat({"model": "cubestream/cam", "temperature": 0.2, "stream": True, "start": 10,
                    "messages": [{"role": "system", "content": "x"}, {"role": "user", "content": "first?"},
                                 {"role": "assistant", "content": "a"},
                                 {"role": "user", "content": [{"type": "text", "text": "How many objects are in view?"}]}]})
    assert (r.stream_id, r.question, r.stream, r.start, r.end) == ("cam", "How many objects are in view?", True, 10, None)

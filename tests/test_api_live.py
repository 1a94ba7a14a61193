"""Watches, events (SSE, webhooks, list), search, the OpenAI-compatible chat, roles and metrics over real HTTP,
with live synthetic cameras whose worlds know the truth about every event (stream/synth.py).

One service for the module. The watched camera's world has one lane, so "How many objects are in view?"
is 0 or 1 and each object's visit is an event; the shipped model answers that question reliably (a check
done before this test was built: every quiet cube answered 0, every cube with an object in view not 0).
Webhook receivers are real aiohttp servers on a thread of their own; one is down at first, one never answers.
"""
import asyncio
import json
import threading
import time
import urllib.request
from collections import Counter
from functools import partial

import pytest
import ray

import conftest
from actors.client import Client, ClientError
from actors.server import Service
from configs import load_config
from stream.synth import ENTER_S, SynthWorld
from test_watches import Receiver

pytestmark = pytest.mark.timeout(600)
wait_for = partial(conftest.wait_for, deadline=180.0)

ADMIN, VIEWER = "admin-token", "viewer-token"
WATCHED = dict(seed=177, lanes=1)  # 4 separate episodes of objects in view in its first 300 s, 9 visits
SEARCHED = dict(seed=3, lanes=3)  # 6 objects entered in its first 290 s, each of a look no other had
SPEED = 8  # times real time: 300 stream seconds in about 40 s
UNTIL = 300.0  # stream seconds the watched camera is followed for
CLEAR_S = 4.0  # the watch re-arms after this long with nothing in view
APART_S = 10.0  # visits this far apart are separate events; closer ones may be one (the model sees cubes, not frames)


def spec(seed: int, lanes: int) -> str:
    return f"synth://?seed={seed}&lanes={lanes}&fps=4&speed={SPEED}&width=64&height=64"


def visits(world: SynthWorld, until: float) -> list[tuple[float, float]]:
    """Each object's time in view: from the start of its entry to the end of its leaving."""
    out, entered = [], None
    for e in world.events_until(until):
        if e.kind == "enter":
            entered = e.t
        elif e.kind == "leave":
            out.append((entered, e.t + ENTER_S))
            entered = None
    return out + ([(entered, float("inf"))] if entered is not None else [])


def episodes(vs: list[tuple[float, float]], apart: float) -> list[tuple[float, float]]:
    """Visits merged where the scene was empty for less than `apart` seconds between them."""
    out: list[tuple[float, float]] = []
    for a, b in vs:
        if out and a - out[-1][1] < apart:
            out[-1] = (out[-1][0], b)
        else:
            out.append((a, b))
    return out


class Receivers:
    """Webhook receivers on an event loop of their own thread."""

    def __init__(self):
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(30)

    def close(self, receivers):
        for r in receivers:
            if r.runner is not None:
                self.run(r.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


class SseReader:
    """Follows GET /events as Server-Sent Events on a thread, from before anything happens."""

    def __init__(self, url: str, token: str):
        self.events: list[dict] = []
        req = urllib.request.Request(url + "/events", headers={"Authorization": f"Bearer {token}",
                                                              "Accept": "text/event-stream"})
        self.response = urllib.request.urlopen(req, timeout=600)
        assert self.response.headers.get_content_type() == "text/event-stream"
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        event_id = None
        try:
            for line in self.response:
                line = line.decode().rstrip("\n")
                if line.startswith("id: "):
                    event_id = int(line[4:])
                elif line.startswith("data: "):
                    self.events.append(json.loads(line[6:]) | {"sse_id": event_id})
        except (OSError, ValueError):  # closed at the end of the module
            pass


@pytest.fixture(scope="module")
def hooks():
    rx = Receivers()
    good = rx.run(Receiver("good-secret").start())
    down = Receiver("down-secret")  # nothing listens on its port until a test starts it
    hanging = rx.run(Receiver("hang-secret", hang=True).start())
    yield rx, good, down, hanging
    rx.close([good, down, hanging])


@pytest.fixture(scope="module")
def service(tmp_path_factory, hooks):
    _, good, down, hanging = hooks
    cfg = load_config(overrides={
        "runtime": {"snapshot_dir": str(tmp_path_factory.mktemp("snapshots")), "request_timeout": 60.0,
                    "health_interval": 0.5},
        "server": {"port": 0},
        "api": {"viewer_tokens": [VIEWER], "webhook_timeout": 2.0, "webhook_backoff": 0.5,
                "webhook_backoff_max": 2.0, "webhook_retries": 1000,
                "webhooks": [{"url": good.url, "secret": "good-secret"}, {"url": down.url, "secret": "down-secret"},
                             {"url": hanging.url, "secret": "hang-secret"}]},
    })
    with Service(cfg, num_cpus=2, token=ADMIN) as svc:
        yield svc


@pytest.fixture(scope="module")
def client(service):
    return Client(service.url, ADMIN)


@pytest.fixture(scope="module")
def watched(service, client):
    """Both cameras streamed and the watch on the first followed until UNTIL, with SSE listening throughout."""
    sse = SseReader(service.url, VIEWER)
    client.add("door", spec(**WATCHED))
    client.add("yard", spec(**SEARCHED))
    client.add_watch("door", "How many objects are in view?", answer=["1", "2", "3"], id="someone",
                     clear_s=CLEAR_S, cooldown_s=0)
    progress = []  # (wall time, newest stream time of the watched camera)

    def reached():
        t = client.timeline("door")
        progress.append((time.monotonic(), t[-1]["end"] if t else 0.0))
        return t and t[-1]["end"] >= UNTIL

    wait_for(reached, f"{UNTIL:g} s of the watched camera", deadline=400)
    return sse, progress


def test_a_watch_fires_once_per_true_event_not_once_per_cube(client, watched):
    events = client.events(stream="door")
    world = SynthWorld(**WATCHED, width=64, height=64)
    vs = [v for v in visits(world, UNTIL) if v[0] < UNTIL - 10]
    true_events = [e for e in episodes(vs, APART_S)]
    alerts = [(e["start"], e["end"]) for e in events if e["start"] < UNTIL - 10]
    assert len(true_events) >= 4

    def visit_of(alert):
        hits = [i for i, (a, b) in enumerate(vs) if alert[0] <= b + 2 and alert[1] >= a - 2]
        assert hits, f"alert at {alert} while nothing was in view (visits {vs})"
        return hits[0]

    per_visit = Counter(visit_of(a) for a in alerts)
    assert max(per_visit.values()) == 1, f"a visit alerted more than once: {alerts} for {vs}"
    for a, b in true_events:
        assert any(a - 2 <= s <= b + 2 for s, _ in alerts), f"the event {a:.1f}-{b:.1f}s raised no alert: {alerts}"
    cubes = [c for c in client.timeline("door") if c["start"] < UNTIL - 10]
    assert len(cubes) >= 3 * len(alerts), "evaluated on every cube, alerting on few"
    w = client.watch("door", "someone")
    assert w["state"]["last_end"] >= UNTIL - 20  # it kept evaluating to the end
    e = events[0]
    assert e["watch"] == "someone" and e["answer"] in ("1", "2", "3") and e["question"] == "How many objects are in view?"
    thumb = client._call("GET", e["thumbnail"])
    assert thumb[:2] == b"\xff\xd8"  # the alert's thumbnail link serves its JPEG


def test_sse_delivers_every_event_live_and_resumes_from_last_event_id(service, client, watched):
    sse, _ = watched
    listed = client.events()
    wait_for(lambda: len(sse.events) >= len(listed), "the SSE reader to have every event")
    assert [e["id"] for e in sse.events[:len(listed)]] == [e["id"] for e in listed]
    assert all(e["sse_id"] == e["id"] for e in sse.events)
    # a client that saw the first event reconnects with Last-Event-ID: it gets the rest, then live ones
    resumed = Client(service.url, VIEWER).follow_events(last_event_id=listed[0]["id"], timeout=30)
    assert [next(resumed)["id"] for _ in listed[1:]] == [e["id"] for e in listed[1:]]
    assert client.events(after=listed[0]["id"])[:len(listed) - 1] == listed[1:]  # the camera goes on: maybe more
    assert all(e["time"] > listed[-2]["time"] for e in client.events(since=listed[-2]["time"]))


def test_webhooks_signed_retried_while_down_and_a_hanging_one_blocks_nothing(client, hooks, watched):
    rx, good, down, hanging = hooks
    _, progress = watched
    listed = client.events()
    wait_for(lambda: len(good.got) >= len(listed), "the receiver to get every event")
    assert [e["id"] for e in good.got] == [e["id"] for e in listed] and good.bad_signatures == 0  # HMAC checked
    metrics = client.metrics()
    assert f'cubestream_webhook_deliveries_total{{outcome="failed",url="{down.url}"}}' in metrics
    assert f'cubestream_webhook_deliveries_total{{outcome="failed",url="{hanging.url}"}}' in metrics
    assert not hanging.got
    # while one receiver was down and one hung, the camera kept its pace: stream time advanced steadily
    t0, s0 = progress[0]
    t1, s1 = progress[-1]
    assert s1 - s0 >= 0.5 * SPEED * (t1 - t0) - 40, f"the stream fell behind: {s1 - s0:.0f} stream s in {t1 - t0:.0f} s"
    rx.run(down.start())  # the receiver comes back: the retries deliver every event, in order
    wait_for(lambda: len(down.got) >= len(listed), "the receiver that was down to get every event", deadline=60)
    assert [e["id"] for e in down.got][:len(listed)] == [e["id"] for e in listed] and down.bad_signatures == 0


def test_search_ranks_the_entry_of_a_known_event_first(client, watched):
    """Each object of a look no other object had entered the yard once: asked when it entered, the entry holding
    its entry comes first (an entry of the door camera where one of the same look entered there is a match too)."""
    worlds = {"yard": SynthWorld(**SEARCHED, width=64, height=64), "door": SynthWorld(**WATCHED, width=64, height=64)}
    timeline = client.timeline("yard")
    enters = {sid: [e for e in w.events_until(timeline[-1]["end"] - 10) if e.kind == "enter"] for sid, w in worlds.items()}
    once = Counter((e.colour, e.shape) for e in enters["yard"])
    # past the stream's first seconds, whose frames a busy machine may drop while the stream starts
    known = [e for e in enters["yard"] if once[(e.colour, e.shape)] == 1 and e.t > 20]
    assert len(known) >= 3
    ranks = []
    for e in known:
        results = client.search(f"When did a {e.colour} {e.shape} last enter?", limit=100)
        assert {r["stream"] for r in results} == {"door", "yard"}  # across streams
        assert [r["score"] for r in results] == sorted((r["score"] for r in results), reverse=True)
        holds = [any(r["start"] - 1 <= x.t <= r["end"] + 1 for x in enters[r["stream"]]
                     if (x.colour, x.shape) == (e.colour, e.shape)) for r in results]
        ranks.append(holds.index(True) if any(holds) else None)
    assert ranks.count(0) >= 0.75 * len(ranks) and all(r is not None and r <= 2 for r in ranks), \
        f"ranks of the entries holding the events: {ranks}"
    only = client.search(f"When did a {known[0].colour} {known[0].shape} last enter?", streams=["door"], end=60)
    assert only and all(r["stream"] == "door" and r["start"] <= 60 for r in only)


def test_openai_package_gets_answers_plain_and_streamed(service, watched):
    import openai

    oa = openai.OpenAI(base_url=service.url + "/v1", api_key=VIEWER, max_retries=0)
    assert "cubestream/door" in [m.id for m in oa.models.list()]
    r = oa.chat.completions.create(model="cubestream/door", messages=[
        {"role": "system", "content": "You watch a camera."},
        {"role": "user", "content": "How many objects are in view?"}])
    assert r.choices[0].message.content in ("0", "1", "2", "3") and r.choices[0].finish_reason == "stop"
    chunks = list(oa.chat.completions.create(model="cubestream/door", stream=True,
                                             messages=[{"role": "user", "content": "How many objects are in view?"}]))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text in ("0", "1", "2", "3") and chunks[-1].choices[0].finish_reason == "stop"
    with pytest.raises(openai.NotFoundError):
        oa.chat.completions.create(model="cubestream/nowhere", messages=[{"role": "user", "content": "q?"}])
    with pytest.raises(openai.BadRequestError):
        oa.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "q?"}])
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=service.url + "/v1", api_key="wrong", max_retries=0).models.list()


def test_malformed_watches_searches_and_chats_are_4xx(service, client, watched):
    def status(method, path, body=None, token=ADMIN):
        data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
        req = urllib.request.Request(service.url + path, data=data, method=method,
                                     headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=60) as r:
                return r.status
        except urllib.error.HTTPError as e:
            return e.code

    watches = "/streams/door/watches"
    for body, want in [(b"{not json", 400), ([1], 400), ({}, 400), ({"question": 3}, 400),
                       ({"question": "q?", "bogus": 1}, 400), ({"question": "q?", "answer": "maybe", "options": ["yes", "no"]}, 400),
                       ({"question": "q?", "confirm": 0}, 400), ({"question": "x" * 5000}, 400),
                       ({"question": " ".join(["objects"] * 100)}, 400),  # more tokens than the model takes
                       ({"question": "q?", "id": "someone"}, 409)]:
        assert status("POST", watches, body) == want, body
    assert status("POST", "/streams/nowhere/watches", {"question": "q?"}) == 404
    assert status("GET", "/streams/door/watches/nothing") == 404
    assert status("DELETE", "/streams/door/watches/nothing") == 404
    for query, want in [("", 400), ("?q=", 400), ("?q=red&start=x", 400), ("?q=red&start=5&end=1", 400),
                        ("?q=red&limit=0", 400), ("?q=red&limit=100000", 400), ("?q=red&bogus=1", 400),
                        ("?q=red&streams=nowhere", 404), ("?q=" + "x" * 5000, 400),
                        ("?q=" + "+".join(["red"] * 100), 400)]:
        assert status("GET", "/search" + query) == want, query
    for query in ("?since=yesterday", "?after=x", "?limit=0", "?bogus=1"):
        assert status("GET", "/events" + query) == 400, query
    user = [{"role": "user", "content": "How many objects are in view?"}]
    for body, want in [(b"{not json", 400), ({"model": "cubestream/door"}, 400), ({"messages": user}, 400),
                       ({"model": "cubestream/door", "messages": user, "stream": "yes"}, 400),
                       ({"model": "cubestream/door", "messages": [{"role": "user", "content": ""}]}, 400),
                       ({"model": "cubestream/door", "messages": user, "start": 50, "end": 10}, 400),
                       ({"model": "cubestream/nowhere", "messages": user}, 404)]:
        assert status("POST", "/v1/chat/completions", body) == want, body
    assert client.health() == {"ok": True} and client.stream("door")


def test_a_viewer_reads_asks_and_searches_but_cannot_add_or_delete(service, client, watched):
    viewer = Client(service.url, VIEWER)
    for call in (lambda: viewer.add("sneaky", spec(1, 1)), lambda: viewer.remove("door"),
                 lambda: viewer.add_watch("door", "How many objects are in view?", answer="1"),
                 lambda: viewer.remove_watch("door", "someone")):
        with pytest.raises(ClientError) as e:
            call()
        assert e.value.status == 403
    assert {s["id"] for s in viewer.streams()} == {"door", "yard"} and viewer.watches("door")[0]["id"] == "someone"
    assert viewer.ask("door", "How many objects are in view?")["text"]
    assert viewer.search("When did a red circle last enter?", limit=1)
    assert viewer.chat("door", "How many objects are in view?")["choices"][0]["message"]["content"]
    assert viewer.events(stream="door") and viewer.metrics()
    # the admin can; a watch removed stops, a stream removed takes its watches with it
    w = client.add_watch("yard", "How many objects are in view?", answer="3", id="crowd")
    assert w["answers"] == ["3"] and client.remove_watch("yard", "crowd") == {"removed": "crowd"}
    assert [w["id"] for w in client.watches()] == ["someone"]


def test_metrics_counters_never_go_back_when_an_encoder_restarts(service, client, watched):
    def frames():
        text = client.metrics()
        line = next(x for x in text.splitlines() if x.startswith('cubestream_frames_encoded_total{stream="door"}'))
        return float(line.split()[-1]), text

    before, text = frames()
    assert 'cubestream_watch_alerts_total{stream="door",watch="someone"}' in text
    assert 'cubestream_watch_evaluations_total{stream="door"}' in text and "cubestream_events_total" in text
    encoder = ray.get(service.controller.encoder_of.remote("door"))
    ray.kill(encoder, no_restart=False)  # restarted by Ray: its counters start again at 0
    wait_for(lambda: (s := _stream(client, "door")) and 0 < s["encoder_counters"].get("frames", 0) < before,
             "the restarted encoder to count again from 0")
    seen = [before]
    for _ in range(5):
        seen.append(frames()[0])
        time.sleep(0.5)
    assert seen == sorted(seen) and seen[-1] > before, seen


def _stream(client, sid):
    try:
        return client.stream(sid)
    except ClientError:  # 503/504 while the actor restarts
        return None


def test_cli_watches_events_search_chat(service, watched, capsys):
    from actors.cli import main

    common = ["--url", service.url, "--token", ADMIN]
    assert main(["watch", *common, "yard", "Is the red circle that entered at t=12s still there?", "--watch-id", "red"]) == 0
    assert main(["watches", *common]) == 0
    assert main(["events", *common, "--stream", "door", "--limit", "2"]) == 0
    assert main(["search", *common, "When did a red circle last enter?", "--limit", "3"]) == 0
    assert main(["chat", *common, "door", "How many objects are in view?"]) == 0
    assert main(["unwatch", *common, "yard", "red"]) == 0
    out = capsys.readouterr().out
    assert "watch red on yard" in out and "fires on yes" in out and "someone" in out
    assert " door watch someone: " in out and out.count("/thumbnails/") >= 4 and "removed watch red" in out

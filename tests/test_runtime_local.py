"""The whole system on local Ray: gateway, controller, ingest, encoder and LLM actors, over real HTTP.

One Ray instance and one service for the module (Ray takes seconds to start). Waits poll for a state
with a generous deadline; nothing asserts on how long anything took.
"""
import asyncio
import json
import os
import signal
import time
from functools import partial

import aiohttp
import msgpack
import pytest
import ray

from whip_publisher import Publisher, loopback_ice  # noqa: F401  (a fixture)

import conftest
from actors.client import Client, ClientError
from actors.server import Service
from configs import load_config
from conftest import need
from test_sources_rtsp import RtspServer, free_port, have_gst_rtsp_server

pytestmark = pytest.mark.timeout(300)
wait_for = partial(conftest.wait_for, deadline=90.0)

SYNTH = "synth://?seed=3&fps=4&speed=2"  # twice real time: cubes form sooner


async def wait_for_async(cond, what: str, deadline: float = 90.0):
    """wait_for from a test that runs an event loop (the blocking client runs on a thread meanwhile)."""
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        if value := await asyncio.to_thread(cond):
            return value
        await asyncio.sleep(0.2)
    raise AssertionError(f"gave up waiting for {what}")


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    cfg = load_config(overrides={
        "runtime": {"snapshot_dir": str(tmp_path_factory.mktemp("snapshots")), "request_timeout": 60.0,
                    "health_interval": 0.5},
        "server": {"port": 0},
    })
    with Service(cfg, num_cpus=2, token="secret") as svc:
        yield svc


@pytest.fixture(scope="module")
def client(service):
    return Client(service.url, service.token)


@pytest.fixture(scope="module")
def synth(client):
    client.add("synth", SYNTH)
    wait_for(lambda: len(client.timeline("synth")) >= 3, "three cubes of the synthetic stream")
    return "synth"


def test_synthetic_stream_answers_with_citations(client, synth):
    answer = client.ask(synth, "what colour is the square ?")
    assert isinstance(answer["text"], str)
    assert answer["citations"], "an answer cites the time spans it used"
    spans = {(c["start"], c["end"]) for c in client.timeline(synth)}
    assert all((c["start"], c["end"]) in spans for c in answer["citations"])
    assert answer["cubes_considered"] >= 3 and answer["tokens_used"] > 0

    # a time window narrows what the LLM may read
    first = client.timeline(synth)[0]
    assert first["level"] == 0 and first["thumbnail"] and client.thumbnail(synth, first["id"]).startswith(b"\xff\xd8")
    windowed = client.ask(synth, "what happened ?", start=first["start"], end=first["end"])
    assert [(c["start"], c["end"]) for c in windowed["citations"]] == [(first["start"], first["end"])]

    # a multiple-choice question is answered with one of its options, each scored
    chosen = client.ask(synth, "Is the red square still there?", options=["yes", "no"])
    assert chosen["text"] in ("yes", "no") and len(chosen["option_logprobs"]) == 2
    assert chosen["text"] == ("yes", "no")[chosen["option_logprobs"].index(max(chosen["option_logprobs"]))]
    assert "option_logprobs" not in answer

    s = client.stream(synth)
    assert s["source"]["state"] == "connected" and s["encoder_counters"]["frames"] > 0
    assert [x["id"] for x in client.streams()] == [synth]


def test_rtsp_stream_answers_with_citations(client, synth):
    need(have_gst_rtsp_server(), "GStreamer's RTSP server (gir1.2-gst-rtsp-server-1.0 for /usr/bin/python3)")
    server = RtspServer(free_port()).start()
    try:
        client.add("cam", server.url("h264"))
        wait_for(lambda: len(client.timeline("cam")) >= 2, "two cubes of the RTSP stream")
        answer = client.ask("cam", "what is in view ?")
        assert answer["citations"]
        assert client.stream("cam")["source"]["state"] == "connected"
    finally:
        server.kill()
        client.remove("cam")
    assert [x["id"] for x in client.streams()] == [synth]


def test_many_cameras_share_one_ingest_worker_and_reach_the_encoder_at_the_profile_size(service, client, synth):
    """Three RTSP cameras (320x240 on the wire) and a synthetic one: one ingest worker process runs them all,
    and the frames the encoder gets are already the profile's 64x64."""
    need(have_gst_rtsp_server(), "GStreamer's RTSP server (gir1.2-gst-rtsp-server-1.0 for /usr/bin/python3)")
    server = RtspServer(free_port()).start()
    cams = [f"many{i}" for i in range(3)]
    try:
        for cam in cams:
            client.add(cam, server.url("h264"))
        workers = {ray.get(service.controller.ingest_of.remote(sid)) for sid in [synth, *cams]}
        assert len(workers) == 1, "one ingest worker (runtime.ingest_workers: 1) holds every stream"
        (worker,) = workers
        assert set(ray.get(worker.stream_ids.remote())) >= {synth, *cams}
        # decoding yields the cores: the worker's threads (its event loop's, and the decoding threads it
        # starts) run runtime.ingest_nice above Ray's workers (niceness is per thread on Linux; at most 19)
        encoder = ray.get(service.controller.encoder_of.remote(cams[0]))
        ray_nice, pid = (ray.get(a.__ray_call__.remote(lambda actor: (os.getpriority(os.PRIO_PROCESS, 0), os.getpid())))
                         for a in (encoder, worker))
        threads = [os.getpriority(os.PRIO_PROCESS, int(t)) for t in os.listdir(f"/proc/{pid[1]}/task")]
        assert threads.count(min(19, ray_nice[0] + service.cfg.runtime.ingest_nice)) > len(cams), threads
        for cam in cams:
            wait_for(lambda: len(client.timeline(cam)) >= 1, f"a cube of {cam}")
        size = service.cfg.vision.image_size
        encoder = ray.get(service.controller.encoder_of.remote(cams[0]))
        shapes = ray.get(encoder.__ray_call__.remote(
            lambda actor, ids: [actor.worker.streams[sid].last_frame.shape for sid in ids], cams))
        assert shapes == [(size, size, 3)] * 3
        assert all(client.stream(cam)["source"]["frames_sent"] > 0 for cam in cams)
    finally:
        server.kill()
        for cam in cams:
            client.remove(cam)
    assert set(ray.get(worker.stream_ids.remote())) == {synth}, "removed streams stop in their worker"


async def test_whip_publisher_through_the_gateway(service, client, synth, loopback_ice):
    await asyncio.to_thread(client.add, "web", "whip://web")
    url = f"{service.url}/whip/web"
    offer = {"data": "v=0\r\n", "headers": {"Content-Type": "application/sdp"}}
    async with aiohttp.ClientSession() as http:
        async with http.post(url, **offer) as r:  # a publisher presents the token too
            assert r.status == 401
        with pytest.raises(ClientError) as e:  # one publisher feeds one stream
            await asyncio.to_thread(client.add, "web2", "whip://web")
        assert e.value.status == 409
        pub = await Publisher(url, token=service.token).start()
        try:
            await wait_for_async(lambda: len(client.timeline("web")) >= 2, "two cubes of the WHIP stream")
            s = await asyncio.to_thread(client.stream, "web")
            assert s["source"]["state"] == "connected" and s["source"]["frames_sent"] > 0
            answer = await asyncio.to_thread(client.ask, "web", "what is in view ?")
            assert answer["citations"]
            assert await pub.stop() == 200  # WHIP's DELETE, through the gateway
        finally:
            await pub.pc.close()
            await asyncio.to_thread(client.remove, "web")
        async with http.post(url, headers={**offer["headers"], "Authorization": f"Bearer {service.token}"},
                             data=offer["data"]) as r:
            assert r.status == 404  # removed: its publishers are refused
    assert [x["id"] for x in client.streams()] == [synth]


def test_token_is_required_except_for_health(service, client):
    for token in ("", "wrong"):
        with pytest.raises(ClientError) as e:
            Client(service.url, token).streams()
        assert e.value.status == 401
    assert Client(service.url, "").health() == {"ok": True}
    assert isinstance(client.streams(), list)


async def test_malformed_requests_are_4xx_and_the_service_stays_up(service, synth):
    auth = {"Authorization": f"Bearer {service.token}"}
    ask = f"{service.url}/streams/{synth}/ask"
    cases = [
        ("POST", f"{service.url}/streams", b"{not json", 400),
        ("POST", f"{service.url}/streams", b"[1, 2]", 400),
        ("POST", f"{service.url}/streams", json.dumps({"id": "x"}).encode(), 400),
        ("POST", f"{service.url}/streams", json.dumps({"id": 5, "source": "synth://"}).encode(), 400),
        ("POST", f"{service.url}/streams", json.dumps({"id": "../etc", "source": "synth://"}).encode(), 400),
        ("POST", f"{service.url}/streams", json.dumps({"id": "x", "source": "gopher://cam"}).encode(), 400),
        ("POST", f"{service.url}/streams", json.dumps({"id": "x", "source": "synth://?seed=abc"}).encode(), 400),
        ("POST", f"{service.url}/streams", json.dumps({"id": synth, "source": SYNTH}).encode(), 409),
        ("POST", f"{service.url}/streams", b"x" * (service.cfg.server.max_body_bytes + 1), 413),
        ("POST", ask, json.dumps({"question": ""}).encode(), 400),
        ("POST", ask, json.dumps({"question": "word " * 500}).encode(), 400),
        ("POST", ask, json.dumps({"question": "why ?", "start": "yesterday"}).encode(), 400),
        ("POST", ask, json.dumps({"question": "why ?", "extra": 1}).encode(), 400),
        ("POST", ask, json.dumps({"question": "why ?", "options": "yes"}).encode(), 400),
        ("POST", ask, json.dumps({"question": "why ?", "options": ["yes"]}).encode(), 400),
        ("POST", ask, json.dumps({"question": "why ?", "options": ["yes", 1]}).encode(), 400),
        ("POST", ask, json.dumps({"question": "why ?", "options": ["yes", "yes"]}).encode(), 400),
        ("POST", ask, json.dumps({"question": "why ?", "options": ["yes", "qwertyuiop"]}).encode(), 400),
        ("POST", f"{service.url}/streams/nope/ask", json.dumps({"question": "why ?"}).encode(), 404),
        ("GET", f"{service.url}/streams/nope", None, 404),
        ("DELETE", f"{service.url}/streams/nope", None, 404),
        ("GET", f"{service.url}/streams/nope/timeline", None, 404),
        ("GET", f"{service.url}/streams/{synth}/thumbnails/999999", None, 404),
        ("GET", f"{service.url}/streams/{synth}/thumbnails/x", None, 404),
        ("POST", ask, json.dumps({"question": "why ?", "start": 5, "end": 1}).encode(), 400),
        ("POST", f"{service.url}/streams", json.dumps({"id": "w", "source": "whip://"}).encode(), 400),
        ("GET", f"{service.url}/nowhere", None, 404),
        ("PUT", f"{service.url}/streams", b"{}", 405),
    ]
    async with aiohttp.ClientSession(headers=auth) as http:
        for method, url, body, status in cases:
            async with http.request(method, url, data=body, headers={"Content-Type": "application/json"}) as r:
                assert r.status == status, (method, url, body[:40] if body else None, await r.text())
        # a msgpack body that is not msgpack
        async with http.post(ask, data=b"\xc1\xc1", headers={"Content-Type": "application/msgpack"}) as r:
            assert r.status == 400
        # msgpack both ways
        async with http.post(ask, data=msgpack.packb({"question": "what moved ?"}),
                             headers={"Content-Type": "application/msgpack", "Accept": "application/msgpack"}) as r:
            assert r.status == 200 and r.content_type == "application/msgpack"
            assert msgpack.unpackb(await r.read())["citations"]
        async with http.get(f"{service.url}/streams/{synth}/timeline") as r:
            assert r.status == 200 and len(await r.json()) >= 3
    assert Client(service.url, service.token).stream(synth)["source"]["state"] == "connected"


async def test_100_concurrent_queries_are_all_answered(service, synth):
    auth = {"Authorization": f"Bearer {service.token}"}
    async with aiohttp.ClientSession(headers=auth, timeout=aiohttp.ClientTimeout(total=240)) as http:
        async def one(i):
            async with http.post(f"{service.url}/streams/{synth}/ask", json={"question": f"what colour is object {i % 7} ?"}) as r:
                return r.status, await r.json()

        results = await asyncio.gather(*(one(i) for i in range(100)))
    assert [s for s, _ in results] == [200] * 100
    assert all(body["citations"] for _, body in results)


def test_metrics_in_prometheus_text_format(client, synth):
    text = client.metrics()
    assert "# TYPE cubestream_cubes_total counter" in text and f'cubestream_memory_tokens{{stream="{synth}"}}' in text
    assert f'cubestream_frames_encoded_total{{stream="{synth}"}}' in text
    assert f'cubestream_frames_skipped_total{{stream="{synth}"}}' in text and f'cubestream_decode_lag_seconds{{stream="{synth}"}}' in text
    assert 'cubestream_http_requests_total{route="/streams/{id}/ask",status="200"}' in text
    samples = [line for line in text.splitlines() if line and not line.startswith("#")]
    assert all(len(line.rsplit(" ", 1)) == 2 and float(line.rsplit(" ", 1)[1]) >= 0 for line in samples)


def test_encoder_killed_recovers_without_losing_a_closed_cube(service, client, synth):
    before = client.timeline(synth)
    encoder = ray.get(service.controller.encoder_of.remote(synth))
    ray.kill(encoder, no_restart=False)  # the process dies; Ray restarts the actor
    after = wait_for(lambda: (t := _timeline_or_none(client, synth)) and len(t) > len(before) + 2 and t,
                     "new cubes after the restart")
    assert after[:len(before)] == before, "every cube closed before the kill is still there"
    assert [c["id"] for c in after] == list(range(len(after)))
    assert client.stream(synth)["encoder_counters"]["restored_cubes"] >= len(before)


def test_ingest_process_killed_is_restarted_and_reconnects(service, client):
    """The ingest worker's process dies (SIGKILL): Ray restarts it, the controller's health check gives it
    its streams again, they reconnect to their cameras, and their cubes go on with no gap in their ids."""
    client.add("ingest-kill", SYNTH)
    ingest = ray.get(service.controller.ingest_of.remote("ingest-kill"))
    def pid():
        return ray.get(ingest.__ray_call__.remote(lambda actor: os.getpid()), timeout=10)
    first = pid()
    before = wait_for(lambda: (t := client.timeline("ingest-kill")) and len(t) >= 2 and t, "two cubes")
    os.kill(first, signal.SIGKILL)
    after = wait_for(lambda: (t := _timeline_or_none(client, "ingest-kill")) and len(t) > len(before) + 2 and t,
                     "new cubes after the ingest restart")
    assert pid() != first, "a new ingest process"
    assert after[:len(before)] == before and [c["id"] for c in after] == list(range(len(after)))
    assert client.stream("ingest-kill")["source"]["state"] != "connecting"
    client.remove("ingest-kill")


def _timeline_or_none(client, sid):
    try:
        return client.timeline(sid)
    except ClientError:  # 503/504 while the actor restarts
        return None


def test_cli_add_streams_ask(service, synth, capsys):
    from actors.cli import main

    common = ["--url", service.url, "--token", service.token]
    assert main(["add", *common, "cli", "synth://?seed=5&fps=4&speed=2"]) == 0
    assert main(["streams", *common]) == 0
    out = capsys.readouterr().out
    assert "added cli" in out and "synth://?seed=5" in out
    header, *rows = out.splitlines()[1:]
    assert header.split()[:8] == ["id", "state", "sampled", "dropped", "skipped", "behind", "encoded", "cubes"]
    row = next(r.split() for r in rows if r.startswith("cli "))
    assert row[4] == "0" and row[5] == "0.0s"  # a synthetic camera is never decoded behind real time
    assert main(["ask", *common, synth, "what colour is the square ?"]) == 0
    assert "cited t=" in capsys.readouterr().out
    assert main(["ask", *common, synth, "Is the red square still there?", "--option", "yes", "--option", "no"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] in ("yes", "no") and out[1].startswith("  option 'yes': log-likelihood ")
    Client(service.url, service.token).remove("cli")


def test_ingest_and_controller_processes_do_not_load_torch():
    """Ray imports actors/runtime.py in every actor's process: one per camera must stay small (no torch)."""
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", "import sys, actors.runtime; print(sorted(m for m in sys.modules if m.split('.')[0] == 'torch')[:3])"],
                         capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout

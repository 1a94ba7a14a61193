"""`cubestream serve` (a real subprocess) stopped and started again comes back with the same streams, watches,
events and memories: the registry and the event log live in the state folder, memories in their stores."""
import json
import os
import re
import signal
import subprocess
import shutil
import sys
import tempfile
import time

import pytest

from actors.client import Client, ClientError

pytestmark = pytest.mark.timeout(400)

TOKEN = "restart-token"
SPEC = "synth://?seed=177&lanes=1&fps=4&speed=4&width=64&height=64"


def serve(snapshots, ray_tmp) -> tuple[subprocess.Popen, str]:
    env = os.environ | {"RAY_TMPDIR": str(ray_tmp), "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    p = subprocess.Popen([sys.executable, "-m", "actors.cli", "serve", "--port", "0",
                          "--set", f"runtime.snapshot_dir={snapshots}", "--set", f"server.token={TOKEN}"],
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
    deadline = time.monotonic() + 180
    for line in p.stdout:
        if m := re.match(r"cubestream serving on (\S+)", line):
            return p, m.group(1)
        assert time.monotonic() < deadline, "serve did not start"
    raise AssertionError(f"serve exited with {p.wait()} before serving")


def stop(p: subprocess.Popen) -> None:
    """SIGTERM, as a service manager stops it (its exit status is not the point: what it kept is)."""
    p.send_signal(signal.SIGTERM)
    try:
        p.wait(timeout=90)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()
        raise


def wait_for(cond, what: str, deadline: float = 120.0):
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        try:
            if value := cond():
                return value
        except ClientError:  # restoring
            pass
        time.sleep(0.3)
    raise AssertionError(f"gave up waiting for {what}")


def test_serve_restarted_has_the_same_streams_watches_events_and_memories(tmp_path):
    snapshots = tmp_path / "snapshots"
    ray_tmp = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # short: Ray's socket paths must fit in 107 bytes
    try:
        _restart(snapshots, ray_tmp)
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)


def _restart(snapshots, ray_tmp):
    p, url = serve(snapshots, ray_tmp)
    try:
        c = Client(url, TOKEN)
        c.add("door", SPEC)
        c.add_watch("door", "How many objects are in view?", answer=["1", "2", "3"], id="someone", clear_s=4, cooldown_s=0)
        wait_for(lambda: c.events(), "an alert")  # an object is in view from t=1.4s
        before = wait_for(lambda: (t := c.timeline("door")) and len(t) >= 4 and t, "four cubes")
        watches, events = c.watches(), c.events()
    finally:
        stop(p)

    p, url = serve(snapshots, ray_tmp)
    try:
        c = Client(url, TOKEN)
        assert [(s["id"], s["spec"]) for s in c.streams()] == [("door", SPEC)]
        spec = ("id", "stream", "question", "answers", "clear_s", "cooldown_s")
        assert [[w[k] for k in spec] for w in c.watches()] == [[w[k] for k in spec] for w in watches]
        assert c.watches()[0]["state"]["last_fired"] >= watches[0]["state"]["last_fired"]  # its hysteresis' state too
        assert c.events()[:len(events)] == events
        after = wait_for(lambda: (t := c.timeline("door")) and len(t) > len(before) + 1 and t, "new cubes after the restart")
        assert after[:len(before)] == before, "the memory is back, every cube closed before the stop included"
        assert after[len(before)]["start"] >= before[-1]["end"]  # and goes on after it in stream time
        assert c.stream("door")["encoder_counters"]["restored_cubes"] >= len(before)
        assert c.ask("door", "How many objects are in view?")["citations"]
        c.remove("door")  # a stream removed leaves the registry with its watches (tests/test_watches.py: it stays so)
        assert c.watches() == [] and json.loads((snapshots / "_state" / "registry.json").read_text())["streams"] == {}
    finally:
        stop(p)

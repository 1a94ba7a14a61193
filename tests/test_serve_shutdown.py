"""`cubestream serve` as a process (a real subprocess with its own Ray), stopped as a service manager stops it
and started again: SIGTERM saves every stream's state and exits 0; the restart brings back the same streams,
watches (with their state), events and memories (the registry and event log live in the state folder,
memories in their stores); a removal is kept; SIGINT (Ctrl-C) takes the same way out; and `serve` warns when
it listens beyond loopback without TLS."""
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import pytest

from actors.client import Client, ClientError
from conftest import wait_for

pytestmark = pytest.mark.timeout(500)

TOKEN = "t0ken"
WATCH_SPEC = "synth://?seed=177&lanes=1&fps=4&speed=4&width=64&height=64"  # an object in view from t=1.4s
SPECS = {"door": WATCH_SPEC, "yard": "synth://?seed=2&fps=4&speed=2"}


class Serve:
    """`cubestream serve` on 0.0.0.0 (beyond loopback) with its own Ray and this snapshot folder."""

    def __init__(self, snapshots, ray_tmp):
        env = os.environ | {"RAY_TMPDIR": ray_tmp, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
        self.stderr = tempfile.TemporaryFile("w+")  # a file, not a pipe: a full pipe would block the server
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "actors.cli", "serve", "--host", "0.0.0.0", "--port", "0",
             "--set", f"runtime.snapshot_dir={snapshots}", "--set", "runtime.health_interval=0.5",
             "--set", f"server.token={TOKEN}"],
            stdout=subprocess.PIPE, stderr=self.stderr, text=True, env=env)
        line = self.proc.stdout.readline()
        if not line.startswith("cubestream serving on http://"):
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"serve did not start: {line!r} {self._err()[-3000:]}")
        self.client = Client(line.split()[-1].replace("0.0.0.0", "127.0.0.1"), TOKEN)

    def stop(self, sig) -> tuple[int, str, str]:
        self.proc.send_signal(sig)
        try:
            out, _ = self.proc.communicate(timeout=120)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode, out, self._err()

    def _err(self) -> str:
        self.stderr.seek(0)
        return self.stderr.read()


def test_sigterm_saves_every_stream_and_a_restart_brings_back_streams_watches_events_and_memories(tmp_path):
    snapshots = tmp_path / "snapshots"
    ray_tmp = tempfile.mkdtemp(prefix="/tmp/rs")  # short: Ray's socket paths must fit in 107 bytes
    try:
        _stop_and_restart(snapshots, ray_tmp)
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)


def _stop_and_restart(snapshots, ray_tmp):
    serve = Serve(snapshots, ray_tmp)
    c = serve.client
    try:
        for sid, spec in SPECS.items():
            c.add(sid, spec)
        c.add_watch("door", "How many objects are in view?", answer=["1", "2", "3"], id="someone", clear_s=4,
                    cooldown_s=0)
        wait_for(lambda: c.events(), "an alert", retry_on=(ClientError,))
        before = {sid: wait_for(lambda: (t := c.timeline(sid)) and len(t) >= 3 and t, f"cubes of {sid}")
                  for sid in SPECS}
        watches, events = c.watches(), c.events()
        signalled = time.time()
    finally:
        rc, out, err = serve.stop(signal.SIGTERM)
    assert rc == 0, err[-3000:]
    assert "stopping; saving every stream's state" in out
    assert all((snapshots / sid / "encoder.bin").stat().st_mtime >= signalled for sid in SPECS), \
        "every stream's encoder state was saved at shutdown"
    assert "without TLS" in err  # 0.0.0.0 is beyond loopback
    assert "Traceback" not in err, err[-3000:]

    serve = Serve(snapshots, ray_tmp)
    c = serve.client
    try:
        assert sorted((s["id"], s["spec"]) for s in c.streams()) == sorted(SPECS.items())
        fields = ("id", "stream", "question", "answers", "clear_s", "cooldown_s")
        assert [[w[k] for k in fields] for w in c.watches()] == [[w[k] for k in fields] for w in watches]
        assert c.watches()[0]["state"]["last_fired"] >= watches[0]["state"]["last_fired"]  # its hysteresis' state too
        assert c.events()[:len(events)] == events
        for sid in SPECS:
            after = wait_for(lambda: (t := c.timeline(sid)) and len(t) > len(before[sid]) + 1 and t,
                             f"new cubes of {sid} after the restart", retry_on=(ClientError,))
            assert after[:len(before[sid])] == before[sid], "the memory is back, every cube closed before the stop"
            assert after[len(before[sid])]["start"] >= before[sid][-1]["end"]  # and goes on after it in stream time
            assert c.stream(sid)["encoder_counters"]["restored_cubes"] >= len(before[sid])
        assert c.ask("door", "How many objects are in view?")["citations"]
        c.remove("door")  # a stream removed leaves the registry with its watches
        assert c.watches() == []
        assert list(json.loads((snapshots / "_state" / "registry.json").read_text())["streams"]) == ["yard"]
    finally:
        rc, out, err = serve.stop(signal.SIGINT)  # Ctrl-C takes the same way out as SIGTERM
    assert rc == 0 and "stopping; saving every stream's state" in out, err[-3000:]
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err[-3000:]

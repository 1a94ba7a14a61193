"""`cubestream serve` as a process: SIGTERM and SIGINT stop it gracefully (every stream's state saved,
exit 0, and a restart restores every stream), and it warns when it listens beyond loopback without TLS."""
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import pytest

from actors.client import Client, ClientError

pytestmark = pytest.mark.timeout(400)

TOKEN = "t0ken"
SPECS = {"cam": "synth://?seed=1&fps=4&speed=2", "yard": "synth://?seed=2&fps=4&speed=2"}


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


def test_sigterm_saves_every_stream_exits_0_and_a_restart_restores_them(tmp_path):
    snapshots = tmp_path / "snapshots"
    ray_tmp = tempfile.mkdtemp(prefix="/tmp/rs")  # short: Ray's socket paths must fit in 107 bytes
    try:
        serve = Serve(snapshots, ray_tmp)
        try:
            for sid, spec in SPECS.items():
                serve.client.add(sid, spec)
            before = {sid: wait_for(lambda: (t := serve.client.timeline(sid)) and len(t) >= 2 and t, f"cubes of {sid}")
                      for sid in SPECS}
            signalled = time.time()
        finally:
            rc, out, err = serve.stop(signal.SIGTERM)
        assert rc == 0, err[-3000:]
        assert "stopping; saving every stream's state" in out
        assert all((snapshots / sid / "encoder.bin").stat().st_mtime >= signalled for sid in SPECS), \
            "every stream's encoder state was saved at shutdown"
        assert "without TLS" in err  # 0.0.0.0 is beyond loopback
        assert "Traceback" not in err, err[-3000:]

        serve = Serve(snapshots, ray_tmp)  # a restart restores every stream, memories included
        try:
            assert sorted((s["id"], s["spec"]) for s in serve.client.streams()) == sorted(SPECS.items())
            for sid in SPECS:
                after = wait_for(lambda: (t := serve.client.timeline(sid)) and len(t) > len(before[sid]) and t,
                                 f"new cubes of {sid} after the restart")
                assert after[:len(before[sid])] == before[sid]
        finally:
            assert serve.stop(signal.SIGTERM)[0] == 0
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)


def test_sigint_stops_serve_gracefully(tmp_path):
    """Ctrl-C takes the same way out as SIGTERM."""
    ray_tmp = tempfile.mkdtemp(prefix="/tmp/rs")
    try:
        serve = Serve(tmp_path / "snapshots", ray_tmp)
        assert serve.client.health() == {"ok": True}
        rc, out, err = serve.stop(signal.SIGINT)
        assert rc == 0 and "stopping; saving every stream's state" in out, err[-3000:]
        assert "Traceback" not in err and "KeyboardInterrupt" not in err, err[-3000:]
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)

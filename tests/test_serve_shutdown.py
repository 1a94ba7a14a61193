"""`cubestream serve` as a process: SIGTERM and SIGINT stop it gracefully (every stream's state saved,
exit 0), and it warns when it listens beyond loopback without TLS."""
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml

from actors.client import Client
from configs import PROFILES

pytestmark = pytest.mark.timeout(240)


def wait_for(cond, what: str, deadline: float = 120.0):
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        if value := cond():
            return value
        time.sleep(0.3)
    raise AssertionError(f"gave up waiting for {what}")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_stops_serve_gracefully(tmp_path, sig):
    profile = yaml.safe_load((Path(str(PROFILES)) / "default.yaml").read_text())
    snapshots = tmp_path / "snapshots"
    profile["checkpoint"] = str(Path(str(PROFILES)) / profile["checkpoint"])
    profile["runtime"].update(snapshot_dir=str(snapshots), health_interval=0.5)
    config = tmp_path / "profile.yaml"
    config.write_text(yaml.safe_dump(profile))
    ray_tmp = tempfile.mkdtemp(prefix="/tmp/rs")  # short: Ray's socket paths must fit in 107 bytes
    env = os.environ | {"CUBESTREAM_TOKEN": "t0ken", "RAY_TMPDIR": ray_tmp, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "actors.cli", "serve", "--config", str(config), "--host", "0.0.0.0",
                             "--port", "0"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        line = proc.stdout.readline()
        assert line.startswith("cubestream serving on http://"), (line, proc.stderr.read() if proc.poll() is not None else "")
        client = Client(line.split()[-1].replace("0.0.0.0", "127.0.0.1"), "t0ken")
        client.add("cam", "synth://?seed=1&fps=4&speed=2")
        wait_for(lambda: len(client.timeline("cam")) >= 2, "two cubes")
        state = snapshots / "cam" / "encoder.bin"
        signalled = time.time()
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        shutil.rmtree(ray_tmp, ignore_errors=True)
    assert proc.returncode == 0, err[-3000:]
    assert "stopping; saving every stream's state" in out
    assert state.stat().st_mtime >= signalled, "the stream's encoder state was saved at shutdown"
    assert "without TLS" in err  # 0.0.0.0 is beyond loopback
    assert "Traceback" not in err, err[-3000:]

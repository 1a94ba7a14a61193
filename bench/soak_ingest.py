"""Soak: the runtime at a steady load for a long time, every process's resident memory sampled.

Local Ray, default profile, --streams cameras: synthetic ones sped up --speed times (accelerated: each
sends --speed times its real rate of sampled frames, so a 30-minute soak makes the calls, cubes and log
records of --speed x 30 minutes), or with --rtsp FILE real RTSP cameras streaming an H.264 file
(bench/rtsp_file_server.py; each reconnects when the file ends). Every --interval seconds the RSS of
every process of the runtime (Ray's GCS and raylet included) is read from /proc; at the end a table
per kind of process: RSS after the warm-up, at the end, the most, and the growth over the second half
of the run (MB per hour, least squares), with the frames encoded per second. Each stream's rolling memory
grows until it holds memory.token_budget tokens and then stays there (merging), so each sample also shows
how full the memories are: RSS that still grows once they are full is a leak. With --ask-every S a question
is asked of the streams in turn every S seconds (over each one's whole memory, as a user or a watch would),
so the processes that answer are soaked too; their count, failures and latency are printed at the end.

Run (Linux): .venv/bin/python bench/soak_ingest.py [--minutes 30] [--streams 4] [--speed 8] [--rtsp FILE]
    [--ask-every SECONDS] [--set KEY=VALUE ...]   (any config value, e.g. --set memory.token_budget=512 to fill the memories sooner)
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import ray

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from actors.cli import settings  # noqa: E402
from actors.runtime import start_controller  # noqa: E402
from bench.bench_ingest import SERVER, descendants, memory_mb  # noqa: E402
from configs import load_config  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=30.0)
    ap.add_argument("--streams", type=int, default=4)
    ap.add_argument("--speed", type=float, default=8.0, help="synthetic cameras at this many times real time")
    ap.add_argument("--rtsp", type=Path, default=None, help="serve this H.264 MP4 over RTSP instead")
    ap.add_argument("--interval", type=float, default=10.0, help="seconds between samples")
    ap.add_argument("--warmup", type=float, default=60.0, help="seconds before the first sample that counts")
    ap.add_argument("--cores", type=int, default=os.cpu_count())
    ap.add_argument("--ask-every", type=float, default=0.0, help="seconds between questions (0: none)")
    ap.add_argument("--set", action="append", metavar="KEY=VALUE", help="a config value (repeatable)")
    args = ap.parse_args()

    server = None
    if args.rtsp:
        port = 20000 + os.getpid() % 20000
        server = subprocess.Popen(["/usr/bin/python3", str(SERVER), str(port), str(args.rtsp)], stdout=subprocess.PIPE, text=True)
        assert server.stdout.readline().strip() == "ready"
        specs = [f"rtsp://127.0.0.1:{port}/cam"] * args.streams
    else:
        specs = [f"synth://?seed={i}&fps=4&speed={args.speed:g}" for i in range(args.streams)]
    samples: list[tuple[float, dict[int, tuple[str, float]]]] = []
    encoded = []
    fill = []  # the least full stream memory, as a fraction of its token budget, at each sample
    asked: list[tuple[float, bool]] = []  # (seconds, answered) of each question
    try:
        with tempfile.TemporaryDirectory() as snapshots:
            overrides = settings(args.set)
            overrides.setdefault("runtime", {})["snapshot_dir"] = snapshots
            cfg = load_config(overrides=overrides)
            ray.init(num_cpus=args.cores, include_dashboard=False, log_to_driver=False)
            controller = start_controller(cfg)
            for i, spec in enumerate(specs):
                ray.get(controller.add_stream.remote(f"soak{i}", spec), timeout=120)
            stop = threading.Event()
            asker = threading.Thread(target=ask, args=(controller, len(specs), args.ask_every, stop, asked), daemon=True)
            if args.ask_every:
                asker.start()
            t0 = time.monotonic()
            end = t0 + args.warmup + 60 * args.minutes
            while time.monotonic() < end:
                time.sleep(args.interval)
                procs = {p: k for p, k in descendants(os.getpid()).items() if k != "rtsp server"}
                samples.append((time.monotonic() - t0, {p: (k, memory_mb(p, "VmRSS")) for p, k in procs.items()}))
                streams = ray.get(controller.list_streams.remote(), timeout=60)
                encoded.append((time.monotonic() - t0, sum(s["encoder_counters"].get("frames", 0) for s in streams)))
                fill.append(min((s["encoder_counters"].get("memory_tokens", 0) for s in streams), default=0)
                            / cfg.memory.token_budget)
                by_kind = defaultdict(float)
                for k, r in samples[-1][1].values():
                    by_kind[k] += r
                print(f"{samples[-1][0]:7.0f} s  " + "  ".join(f"{k} {r:.0f}" for k, r in sorted(by_kind.items()))
                      + f"  encoded {encoded[-1][1]}  least full memory {fill[-1]:.0%}", flush=True)
            stop.set()
            if asker.is_alive():
                asker.join()  # its last question answered before the runtime goes
            ray.kill(controller)
            ray.shutdown()
    finally:
        if server is not None:
            server.kill()
            server.wait()

    counted = [(t, s) for t, s in samples if t >= args.warmup]
    series: dict[str, list[tuple[float, float]]] = defaultdict(list)  # kind -> (t, RSS summed over its processes)
    for t, s in counted:
        by_kind = defaultdict(float)
        for k, r in s.values():
            by_kind[k] += r
        for k, r in by_kind.items():
            series[k].append((t, r))
    what = f"{args.streams} RTSP cameras ({args.rtsp.name})" if args.rtsp else \
        f"{args.streams} synthetic cameras at {args.speed:g}x real time"
    (ta, ea), (tb, eb) = encoded[0], encoded[-1]
    print(f"\nsoak: {what}, {args.minutes:g} min after a {args.warmup:g} s warm-up; {(eb - ea) / (tb - ta):.1f} frames "
          f"encoded per second; load average at the end {os.getloadavg()[0]:.1f}")
    # from the first sample where every stream's memory held >= 90% of its budget (they merge there)
    full_at = next((samples[i][0] for i, f in enumerate(fill) if f >= 0.9), None)
    print("memories " + (f"full (every stream >= 90% of its token budget) from {full_at:.0f} s" if full_at is not None
                         else f"not full by the end (the least full at {fill[-1]:.0%}): the growth columns include filling"))
    if asked:
        took = np.array([t for t, ok in asked if ok] or [np.nan])
        print(f"questions: {len(asked)} asked, {sum(not ok for _, ok in asked)} failed; answered in p50 "
              f"{np.median(took):.2f} s, p95 {np.percentile(took, 95):.2f} s")
    print("| process | count | RSS after warm-up MB | at the end MB | most MB | second half MB/h | since memories full MB/h |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for k in sorted(series):
        ts, rs = map(np.array, zip(*series[k]))
        count = sum(1 for kk, _ in counted[-1][1].values() if kk == k)
        print(f"| {k} | {count} | {rs[0]:.0f} | {rs[-1]:.0f} | {rs.max():.0f} | "
              f"{growth(ts, rs, ts[0] + (ts[-1] - ts[0]) / 2):+.1f} | "
              f"{growth(ts, rs, full_at) if full_at is not None else float('nan'):+.1f} |")


def ask(controller, streams: int, every: float, stop: threading.Event, asked: list) -> None:
    """A question every `every` seconds, to the streams in turn, until `stop`."""
    i = 0
    while not stop.wait(every):
        t = time.monotonic()
        try:
            ray.get(controller.ask.remote(f"soak{i % streams}", "what happened ?"), timeout=60)
            asked.append((time.monotonic() - t, True))
        except Exception as e:
            asked.append((time.monotonic() - t, False))
            print(f"question to soak{i % streams} failed: {e!r}"[:500], flush=True)
        i += 1


def growth(ts: np.ndarray, rs: np.ndarray, since: float) -> float:
    """MB per hour, least squares over the samples from `since` (nan with fewer than 3)."""
    keep = ts >= since
    return np.polyfit(ts[keep], rs[keep], 1)[0] * 3600 if keep.sum() > 2 else float("nan")


if __name__ == "__main__":
    main()

"""The runtime on embedded local Ray, default profile: streams sustained in real time at 2 fps, frame-to-memory
latency, overhead over the bare StreamEncoder loop on the same frames, and query latency under load.

    python bench/bench_runtime.py [--streams 1,4,8,16] [--seconds 20]
"""
from __future__ import annotations

import argparse
import concurrent.futures as cf
import statistics
import tempfile
import time

import torch

from actors.client import Client
from actors.server import Service
from actors.worker import load_models
from configs import load_config
from models import StreamEncoder
from stream.synth import SynthWorld


def synth(seed: int, size: int, **q) -> str:
    return f"synth://?seed={seed}&width={size}&height={size}&" + "&".join(f"{k}={v}" for k, v in q.items())


def wait_encoded(client: Client, ids: list[str], frames: int) -> None:
    while any(client.stream(i)["encoder_counters"].get("frames", 0) < frames for i in ids):
        time.sleep(0.1)


def realtime(client: Client, n: int, seconds: float, size: int, fps: float) -> dict:
    """n live cameras at `fps` for `seconds`: sustained when every sampled frame reaches memory (none dropped)."""
    ids = [f"rt{n}-{i}" for i in range(n)]
    for i, sid in enumerate(ids):
        client.add(sid, synth(i, size, fps=fps, speed=1))
    time.sleep(seconds)
    q = query_latency(client, ids[0], 20)
    stats = [client.stream(s) for s in ids]
    for s in ids:
        client.remove(s)
    sampled = sum(s["source"]["frames_sampled"] for s in stats)
    encoded = sum(s["encoder_counters"].get("frames", 0) for s in stats)
    dropped = sum(s["source"]["frames_dropped"] for s in stats)
    p50 = statistics.median(s["latency_p50"] for s in stats if s["latency_p50"] is not None)
    p95 = max(s["latency_p95"] for s in stats if s["latency_p95"] is not None)
    # a frame can still be in flight at the end; a stream keeps up when it loses none and lags at most one
    sustained = dropped == 0 and encoded >= sampled - n
    return {"streams": n, "sampled": sampled, "encoded": encoded, "dropped": dropped, "p50": p50, "p95": p95,
            "sustained": sustained, "q_p50": q[0], "q_p95": q[1]}


def query_latency(client: Client, sid: str, n: int) -> tuple[float, float]:
    def one(i):
        t = time.perf_counter()
        client.ask(sid, f"what colour is object {i} ?")
        return time.perf_counter() - t

    with cf.ThreadPoolExecutor(n) as pool:
        lat = sorted(pool.map(one, range(n)))
    return statistics.median(lat), lat[int(0.95 * (len(lat) - 1))]


def overhead(client: Client, cfg, n: int, frames: int, size: int) -> tuple[float, float]:
    """The same frames (n unpaced synthetic cameras, `frames` each) through the bare loop and the runtime."""
    encoder, _ = load_models(cfg)
    torch.set_num_threads(1)
    bare = StreamEncoder(encoder)
    worlds = [SynthWorld(seed=i, width=size, height=size) for i in range(n)]
    for i in range(n):
        bare.add_stream(str(i))
    dt = 1.0 / cfg.sampler.fps
    t = time.perf_counter()
    for k in range(frames):
        bare.push([str(i) for i in range(n)], [w.frame_at(k * dt) for w in worlds], [k * dt] * n)
    t_bare = time.perf_counter() - t

    # steady state: from the moment every stream's first frame is in memory (actor start-up excluded)
    ids = [f"ov{i}" for i in range(n)]
    for i, sid in enumerate(ids):
        client.add(sid, synth(i, size, fps=cfg.sampler.fps, speed=0, duration=(frames - 1) * dt))
    wait_encoded(client, ids, 1)
    t = time.perf_counter()
    done = sum(client.stream(s)["encoder_counters"]["frames"] for s in ids)
    wait_encoded(client, ids, frames)
    t_rt = (time.perf_counter() - t) * n * frames / (n * frames - done)  # scaled to all the frames
    for sid in ids:
        client.remove(sid)
    return t_bare, t_rt


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--streams", default="1,4,8,16")
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--overhead-frames", type=int, default=60)
    args = ap.parse_args()
    cfg = load_config(overrides={"runtime": {"snapshot_dir": tempfile.mkdtemp(prefix="bench-runtime-")},
                                 "server": {"port": 0}})
    size = cfg.vision.image_size
    with Service(cfg, num_cpus=2) as svc:
        client = Client(svc.url, svc.token, timeout=300)
        t_bare, t_rt = overhead(client, cfg, 4, args.overhead_frames, size)
        rows = [realtime(client, int(n), args.seconds, size, cfg.sampler.fps) for n in args.streams.split(",")]

    print(f"\nruntime on embedded local Ray, default profile, {cfg.sampler.fps:g} fps live synthetic cameras, "
          f"{args.seconds:g} s per row\n")
    print("| streams | frames sampled | encoded | dropped | real time | frame->memory p50 | p95 | 20 concurrent asks p50 | p95 |")
    print("|---:|---:|---:|---:|:---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['streams']} | {r['sampled']} | {r['encoded']} | {r['dropped']} | {'yes' if r['sustained'] else 'no'} "
              f"| {1000 * r['p50']:.0f} ms | {1000 * r['p95']:.0f} ms | {1000 * r['q_p50']:.0f} ms | {1000 * r['q_p95']:.0f} ms |")
    n_frames = 4 * args.overhead_frames
    print(f"\noverhead: {n_frames} frames (4 streams x {args.overhead_frames}), rendered and encoded as fast as possible")
    print("| path | seconds | frames/s |\n|---|---:|---:|")
    print(f"| bare StreamEncoder loop (batched, 1 thread) | {t_bare:.2f} | {n_frames / t_bare:.0f} |")
    print(f"| runtime, steady state (ingest actors -> encoder actor -> memory, log + encoder state on disk) | {t_rt:.2f} | {n_frames / t_rt:.0f} |")
    print(f"\nruntime overhead over the bare loop: {100 * (t_rt / t_bare - 1):.0f}%")


if __name__ == "__main__":
    main()

"""Ingest: decode-and-sample throughput per core, and arrival-to-delivery latency, for H.264 at 720p and 1080p.

Encodes a clip of the synthetic camera (with its sensor noise) per resolution into a temp dir, then
- reads it unpaced through FileSource + Sampler at 2 fps (the default rate), counting CPU seconds of the
  whole process (decoder threads included): frames decoded per CPU second, and how many cameras at the
  clip's frame rate that is per core; and the same with every frame converted, to show what sampling
  before the RGB conversion saves;
- plays it paced like a camera and measures arrival (decoded) to delivery (returned by Sampler.get) per
  sampled frame: p50/p95.

Run: .venv/bin/python bench/bench_ingest.py [--seconds 10] [--fps 25]
"""
from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

import av
import numpy as np

from configs import SamplerConfig
from stream.sampler import Sampler
from stream.sources import open_source
from stream.synth import SynthWorld

SIZES = {"720p": (1280, 720), "1080p": (1920, 1080)}


def make_clip(path: Path, width: int, height: int, seconds: float, fps: int) -> None:
    """H.264 the way cameras send it: no B-frames, a keyframe every second."""
    world = SynthWorld(0, width=width, height=height)
    with av.open(str(path), "w") as out:
        s = out.add_stream("libx264", rate=fps, options={"preset": "veryfast", "bf": "0", "g": str(fps), "crf": "23"})
        s.width, s.height, s.pix_fmt = width, height, "yuv420p"
        for i in range(round(seconds * fps)):
            frame = av.VideoFrame.from_ndarray(world.frame_at(i / fps), format="rgb24")
            frame.pts = i
            out.mux(s.encode(frame))
        out.mux(s.encode())


async def throughput(path: Path, sample_fps: float) -> tuple[float, float]:
    """(frames decoded per CPU second, per wall second) reading the file as fast as it decodes."""
    source = open_source(str(path))
    cpu, wall = time.process_time(), time.perf_counter()
    async with Sampler(source, SamplerConfig(fps=sample_fps)) as sampler:
        async for _ in sampler:
            pass
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    return source.status.frames_decoded / cpu, source.status.frames_decoded / wall


async def latency(path: Path) -> np.ndarray:
    """Arrival-to-delivery of each sampled frame, in ms, with the file paced like a live camera."""
    out = []
    async with Sampler(open_source(f"file://{path}?realtime=1"), SamplerConfig(fps=2)) as sampler:
        async for frame in sampler:
            out.append((time.monotonic() - frame.arrival) * 1e3)
    return np.array(out)


async def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--fps", type=int, default=25, help="the clip's (camera's) frame rate")
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, (w, h) in SIZES.items():
            path = Path(tmp) / f"{name}.mp4"
            make_clip(path, w, h, args.seconds, args.fps)
            sampled_cpu, sampled_wall = await throughput(path, 2.0)
            all_cpu, _ = await throughput(path, float(args.fps))
            lat = await latency(path)
            rows.append((name, sampled_cpu, sampled_wall, sampled_cpu / args.fps, all_cpu,
                         np.percentile(lat, 50), np.percentile(lat, 95), len(lat)))

    print(f"H.264 {args.fps} fps, {args.seconds:g} s clips, sampled at 2 fps; throughput in decoded frames per second")
    head = ("", "per core", "wall", f"{args.fps}fps cams/core", "per core, all->RGB", "latency p50 ms", "p95 ms", "n")
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for name, c, wl, cams, allc, p50, p95, n in rows:
        print(f"| {name} | {c:.0f} | {wl:.0f} | {cams:.1f} | {allc:.0f} | {p50:.1f} | {p95:.1f} | {n} |")


if __name__ == "__main__":
    asyncio.run(main())

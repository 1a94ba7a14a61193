"""Rolling memory: bytes held per stream (RAM and disk) and the cost of adding a cube, by the stream's age.

One simulated stream runs for 24 hours of stream time at the sampler's rate, closing a cube every
FRAMES_PER_CUBE frames (random K x D tokens of the profile's shapes, a JPEG thumbnail of a synthetic
frame on every cube), through RollingMemory and its MemoryStore exactly as a worker would. The table
reads at 1 minute, 1 hour and 24 hours of history. Run: .venv/bin/python bench/bench_memory.py

`simulated_memory(seconds)` builds a memory of any simulated age without files, for other benchmarks
(e.g. query latency over 1 minute, 1 hour and 24 hours of memory): from bench.bench_memory import simulated_memory
"""
from __future__ import annotations

import argparse
import itertools
import tempfile
import time
from collections.abc import Iterator

import numpy as np
import torch

from configs import Config, load_config
from stream.cube import Cube
from stream.memory import RollingMemory, make_thumbnail
from stream.snapshot import MemoryStore
from stream.synth import SynthWorld

MARKS = [("1 min", 60.0), ("1 h", 3600.0), ("24 h", 86400.0)]
FRAMES_PER_CUBE = 7  # the shipped model's mean on held-out worlds (README Results); cubing.target_len is a prior, not this


def simulated_cubes(cfg: Config, seconds: float, stream_id: str = "bench", seed: int = 0) -> Iterator[Cube]:
    """The cubes a stream closes over `seconds` of stream time: fixed-length cubes, random tokens."""
    dt, n = 1.0 / cfg.sampler.fps, FRAMES_PER_CUBE
    g = torch.Generator().manual_seed(seed)
    shape = (cfg.resampler.num_queries, cfg.resampler.out_dim)
    for i in itertools.count():
        start = i * n * dt
        if start + (n - 1) * dt > seconds:
            return
        yield Cube(stream_id, i, start, start + (n - 1) * dt, n, torch.randn(shape, generator=g), 1.0)


def thumbnails(cfg: Config, count: int = 64, seed: int = 0) -> list[bytes]:
    """JPEGs of synthetic camera frames a minute apart, to cycle through: realistic sizes at little cost."""
    world = SynthWorld(seed, width=cfg.vision.image_size, height=cfg.vision.image_size)
    return [make_thumbnail(world.frame_at(60.0 * k), cfg.memory.thumbnail_size, cfg.memory.thumbnail_quality)
            for k in range(count)]


def simulated_memory(seconds: float, cfg: Config | None = None, stream_id: str = "bench", seed: int = 0,
                     with_thumbnails: bool = True) -> RollingMemory:
    """A RollingMemory after `seconds` of a simulated stream (24 h takes a few seconds)."""
    cfg = cfg or load_config("default")
    memory = RollingMemory(stream_id, cfg.memory.token_budget, cfg.memory.max_thumbnail_bytes)
    jpegs = thumbnails(cfg, seed=seed) if with_thumbnails else [None]
    for c in simulated_cubes(cfg, seconds, stream_id, seed):
        memory.add(c, jpegs[c.index % len(jpegs)])
    return memory


def pct(xs: list[float], q: float) -> float:
    return float(np.percentile(xs, q))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="default")
    ap.add_argument("--window", type=int, default=2000, help="adds timed before each mark")
    args = ap.parse_args()
    cfg = load_config(args.config)
    m = cfg.memory
    jpegs = thumbnails(cfg)
    marks = iter(MARKS)
    label, mark = next(marks)
    add_s, append_s, compact_s, rows = [], [], [], []
    with tempfile.TemporaryDirectory() as root:
        store = MemoryStore(root, "bench", m)
        memory = store.load().memory
        # the loop is MemoryStore.add, spelled out to time its parts
        for c in simulated_cubes(cfg, MARKS[-1][1]):
            if c.end > mark:
                rows.append(row(label, mark, memory, store, add_s[-args.window:], append_s[-args.window:], compact_s))
                label, mark = next(marks)
            jpeg = jpegs[c.index % len(jpegs)]
            t0 = time.perf_counter()
            memory.add(c, jpeg)
            t1 = time.perf_counter()
            store.append(c, jpeg)
            t2 = time.perf_counter()
            add_s.append(t1 - t0)
            append_s.append(t2 - t1)
            if store.pending >= m.compact_every:
                store.compact(memory)
                compact_s.append(time.perf_counter() - t2)
        rows.append(row(label, mark, memory, store, add_s[-args.window:], append_s[-args.window:], compact_s))
        store.close()

    k, d = cfg.resampler.num_queries, cfg.resampler.out_dim
    print(f"rolling memory, profile {args.config!r}: budget {m.token_budget} tokens = {m.token_budget // k} entries of "
          f"K={k} x D={d} float32; {cfg.sampler.fps:g} fps, {FRAMES_PER_CUBE} frames per cube; "
          f"{m.thumbnail_size}px JPEG thumbnails; log fsync={m.fsync}, snapshot every {m.compact_every} cubes")
    head = ["history", "cubes", "entries", "top level", "RAM KiB", "disk KiB", "RAM B/stream-h", "disk B/stream-h",
            "add p50/p95 us", "log append p50/p95 us", "snapshot ms"]
    print(" | ".join(head))
    print(" | ".join("-" * len(h) for h in head))
    for r in rows:
        print(" | ".join(str(x).rjust(len(h)) for x, h in zip(r, head)))
    print("RAM: tokens, keys and thumbnails held (Python object overhead aside); disk: the stream's folder "
          "(two snapshot generations and their logs). Both are bounded: per stream-hour falls as the stream ages.")


def row(label, seconds, memory, store, add_s, append_s, compact_s) -> list:
    hours = seconds / 3600
    us = lambda xs: f"{pct(xs, 50) * 1e6:.0f} / {pct(xs, 95) * 1e6:.0f}"
    return [label, memory.last_index + 1, len(memory), max(memory.levels()), f"{memory.nbytes / 1024:.0f}",
            f"{store.disk_bytes() / 1024:.0f}", f"{memory.nbytes / hours:,.0f}", f"{store.disk_bytes() / hours:,.0f}",
            us(add_s), us(append_s), f"{np.median(compact_s) * 1e3:.1f}" if compact_s else "-"]


if __name__ == "__main__":
    main()

"""StreamEncoder.push: cost per frame against the stream's age, and frames per second with streams batched.

Prints a table; medians over repeated runs. Run: .venv/bin/python bench/bench_stream_encoder.py [--config default]
"""
from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from configs import load_config
from models import CubeEncoder, StreamEncoder


def frames_for(n_streams: int, n: int, size: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, n_streams, size, size, 3), dtype=np.uint8)


def per_frame_ms(enc: StreamEncoder, sids: list[str], frames: np.ndarray, t0: float) -> list[float]:
    out = []
    for i, batch in enumerate(frames):
        start = time.perf_counter()
        enc.push(sids, batch, [t0 + i * 0.5] * len(sids))
        out.append((time.perf_counter() - start) * 1e3)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--config", default="default")
    ap.add_argument("--old-age", type=int, default=10_000)
    args = ap.parse_args()
    torch.manual_seed(0)
    cfg = load_config(args.config)
    model = CubeEncoder(cfg).eval()
    size = cfg.vision.image_size
    probe = frames_for(1, 200, size, seed=1)

    # Cost against age: one stream, measured over 200 frames at age 100 and at age `old_age`.
    enc = StreamEncoder(model)
    enc.add_stream("s")
    warm = frames_for(1, 100, size)
    per_frame_ms(enc, ["s"], warm, 0.0)
    young = per_frame_ms(enc, ["s"], probe, 100 * 0.5)
    filler = frames_for(1, 50, size, seed=2)
    age = 300
    while age < args.old_age:
        n = min(50, args.old_age - age)
        per_frame_ms(enc, ["s"], filler[:n], age * 0.5)
        age += n
    old = per_frame_ms(enc, ["s"], probe, age * 0.5)

    print(f"\nStreamEncoder.push, profile {args.config!r}, torch threads {torch.get_num_threads()}\n")
    print("| stream age (frames) | median ms / frame | p95 ms / frame |")
    print("| --- | --- | --- |")
    for label, xs in ((100, young), (args.old_age, old)):
        print(f"| {label} | {statistics.median(xs):.2f} | {np.percentile(xs, 95):.2f} |")
    print(f"\nratio old / young (median): {statistics.median(old) / statistics.median(young):.2f}\n")

    print("| streams batched | median ms / push | frames / s |")
    print("| --- | --- | --- |")
    for n_streams in (1, 8, 32):
        enc = StreamEncoder(model)
        sids = [f"s{i}" for i in range(n_streams)]
        for s in sids:
            enc.add_stream(s)
        frames = frames_for(n_streams, 60, size, seed=3)
        per_frame_ms(enc, sids, frames[:10], 0.0)
        ms = per_frame_ms(enc, sids, frames[10:], 5.0)
        med = statistics.median(ms)
        print(f"| {n_streams} | {med:.2f} | {n_streams / med * 1e3:.0f} |")


if __name__ == "__main__":
    main()

"""A pretrained VLM behind cubestream: vision-side throughput by streams, question latency, memory per stream-day.

    .venv/bin/python bench/bench_vlm.py                        # tiny random Qwen2.5-VL and SmolVLM, CPU
    .venv/bin/python bench/bench_vlm.py --model PATH_OR_ID     # any supported VLM (e.g. on a GPU server)
    .venv/bin/python bench/bench_vlm.py --real-size --device cuda   # Qwen2.5-VL-3B's sizes, random weights

Vision side: N streams push one 640x480 camera frame each per step, all through one batched pass of the
VLM's image processor and vision tower (`VLMStreamEncoder.push`, with pooling and the change rule), against
the same batch through the bare processor + tower (`VisionSide.encode`); frames/s are the median over steps,
and streams at 2 fps is what the encode stage sustains. Question: a free-form question over a memory of
cubes (XComp attention selection over windows, then up to 16 generated tokens; and the cheap key
selection), median latency. Memory: a simulated 24 h stream through the rolling memory with the vlm
profile's K and budget, at each model width (tokens are float32 on CPU RAM).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from bench_memory import simulated_memory  # noqa: E402  (bench/ is on the path when run as a script)
from configs import load_config  # noqa: E402
from models.vlm import load_vlm  # noqa: E402
from models.vlm.answerer import VLMAnswerer  # noqa: E402
from models.vlm.stream_encoder import VLMStreamEncoder  # noqa: E402
from stream.cube import Cube  # noqa: E402
from stream.memory import RollingMemory  # noqa: E402
from tiny_vlm import FAMILIES, QWEN2_5_VL_3B, save_tiny_qwen2_5_vl  # noqa: E402

# a cube token's width in memory: the LLM's width (Qwen3-VL: with its 3 deepstack features beside it, x4)
WIDTHS = {"Qwen2.5-VL-3B": 2048, "Qwen2.5-VL-7B": 3584, "Qwen3-VL-4B (+deepstack)": 4 * 2560,
          "SmolVLM2-256M": 576, "SmolVLM2-500M": 960}


def camera_frames(n: int, seed: int, h: int = 480, w: int = 640) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for _ in range(n)]


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def vision_rows(name: str, source: str, cfg, device: str, dtype: str, streams: list[int], steps: int) -> list[list]:
    m = cfg.model
    vision = load_vlm(source, "vision", dtype=dtype, device=device, max_pixels=m.max_pixels)
    rows = []
    for n in streams:
        encoder = VLMStreamEncoder(vision, tuple(m.cube_grid), m.min_frames, m.max_frames, device=device)
        ids = [f"cam{i}" for i in range(n)]
        for sid in ids:
            encoder.add_stream(sid)
        frames = camera_frames(n, seed=n)
        full, bare = [], []
        for step in range(steps + 1):  # the first step warms up
            sync(device)
            t0 = time.perf_counter()
            encoder.push(ids, frames, [step + 1.0] * n)
            sync(device)
            t1 = time.perf_counter()
            vision.encode(frames)
            sync(device)
            t2 = time.perf_counter()
            if step:
                full.append(n / (t1 - t0))
                bare.append(n / (t2 - t1))
        f, b = float(np.median(full)), float(np.median(bare))
        rows.append([name, n, f"{f:.1f}", f"{b:.1f}", f"{100 * f / b:.0f}%", f"{f / cfg.sampler.fps:.1f}"])
    return rows


def question_rows(name: str, source: str, cfg, device: str, dtype: str, cubes: int, repeats: int) -> list[list]:
    m = cfg.model
    language = load_vlm(source, "language", dtype=dtype, device=device)
    k = int(np.prod(m.cube_grid))
    memory = RollingMemory("bench", 10 ** 9)
    g = torch.Generator().manual_seed(0)
    for i in range(cubes):
        memory.add(Cube("bench", i, 4.0 * i, 4.0 * i + 3.5, 8, 0.02 * torch.randn(k, language.token_width, generator=g), 1.0))
    entries = list(memory)
    rows = []
    for selection in ("attention", "key"):
        answerer = VLMAnswerer(language, replace(cfg.answer, selection=selection, max_answer_tokens=16), m.cube_grid)
        times = []
        for r in range(repeats + 1):
            sync(device)
            t0 = time.perf_counter()
            a = answerer.answer(entries, "Is anyone at the door right now, and what are they wearing?")
            sync(device)
            if r:
                times.append(time.perf_counter() - t0)
        rows.append([name, cubes, selection, a.cubes_used, a.tokens_used, f"{np.median(times) * 1e3:.0f}"])
    return rows


def memory_rows(cfg, widths: dict[str, int]) -> list[list]:
    k = int(np.prod(cfg.model.cube_grid))
    rows = []
    for name, d in widths.items():
        c = replace(cfg, resampler=replace(cfg.resampler, num_queries=k, out_dim=d))
        memory = simulated_memory(86400.0, c)
        rows.append([name, d, k, cfg.memory.token_budget, len(memory), f"{memory.nbytes / 2**20:.1f}"])
    return rows


def table(head: list[str], rows: list[list]) -> None:
    print(" | ".join(head))
    print(" | ".join("-" * len(h) for h in head))
    for r in rows:
        print(" | ".join(str(x).rjust(len(h)) for x, h in zip(r, head)))
    print()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", help="a VLM id or path (default: tiny random Qwen2.5-VL and SmolVLM)")
    ap.add_argument("--real-size", action="store_true", help="Qwen2.5-VL-3B's sizes with random weights")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--streams", type=int, nargs="+", default=[1, 8, 32])
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--cubes", type=int, default=64, help="memory entries a question is asked over")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    cfg = load_config("vlm")
    with tempfile.TemporaryDirectory() as tmp:
        if args.model:
            models = {args.model: args.model}
        elif args.real_size:
            models = {"Qwen2.5-VL-3B sizes, random": str(save_tiny_qwen2_5_vl(
                Path(tmp) / "q3b", sizes=QWEN2_5_VL_3B, dtype=torch.bfloat16))}
        else:
            models = {f"tiny {name}": str(save(Path(tmp) / name)) for name, save in FAMILIES.items()}
        gpu = torch.cuda.get_device_name() if args.device.startswith("cuda") else "none (CPU only: no GPU was lent "\
            "to this run; GPU rows need --device cuda on a GPU machine)"
        print(f"bench_vlm: device {args.device}, GPU: {gpu}; torch threads {torch.get_num_threads()}; "
              f"profile vlm: cube grid {cfg.model.cube_grid}, {cfg.model.min_frames}-{cfg.model.max_frames} frames a "
              f"cube, max_pixels {cfg.model.max_pixels}\n")
        print("vision side, batched across streams (640x480 frames)")
        table(["model", "streams", "encode stage frames/s", "bare tower frames/s", "stage/bare",
               f"streams at {cfg.sampler.fps:g} fps"],
              [r for name, src in models.items()
               for r in vision_rows(name, src, cfg, args.device, args.dtype, args.streams, args.steps)])
        print(f"question latency over {args.cubes} memory entries (free answer, up to 16 tokens)")
        table(["model", "entries", "selection", "cubes shown", "tokens", "latency ms (median)"],
              [r for name, src in models.items()
               for r in question_rows(name, src, cfg, args.device, args.dtype, args.cubes, args.repeats)])
    print("memory per stream-day (24 h at 2 fps through the rolling memory, vlm profile)")
    table(["model width", "D", "K", "token budget", "entries after 24 h", "RAM MiB"], memory_rows(cfg, WIDTHS))


if __name__ == "__main__":
    main()

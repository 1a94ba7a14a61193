"""Stage-1 training step throughput (`models/stage1.py`): samples/s and frames/s of one optimizer step
(forward through the frozen vision tower and LLM, backward into the streaming modules), in one process.

Clips come from synthetic worlds exported as a LLaVA-style dataset (`stream/synth_export.py`) and are decoded
once, so the table measures the model, not the decoder. Prints a table; medians over the timed steps.
Run: .venv/bin/python bench/bench_stage1.py [--config default] [--clip-seconds 30] [--steps 5]
     .venv/bin/python bench/bench_stage1.py --config vlm --set model.vlm=PATH --set model.temporal_layers=2
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import torch

from actors.cli import settings as overrides
from actors.train_ray import Stage1Settings, build_stage1, clip_sample
from configs import load_config
from stream.datasets import load_dataset
from stream.synth_export import export_synth


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--config", default="default")
    ap.add_argument("--clip-seconds", type=float, default=30.0)
    ap.add_argument("--batches", default="1,4", help="comma-separated batch sizes")
    ap.add_argument("--steps", type=int, default=5, help="timed steps per batch size (after one warm-up)")
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--set", action="append", metavar="KEY=VALUE", help="override any config value")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cfg = load_config(args.config, overrides=overrides(args.set))
    device = "cuda" if torch.cuda.is_available() else "cpu"
    sizes = [int(b) for b in args.batches.split(",")]
    with tempfile.TemporaryDirectory() as d:
        export_synth(d, "llava", videos=max(sizes), seconds=args.clip_seconds, questions=2)
        model = build_stage1(cfg, Stage1Settings(dataset=d, format="llava")).to(device).train()
        clips = [clip_sample(q, cfg.sampler.fps, args.clip_seconds) for q in load_dataset(d, "llava").items]
    if not cfg.model.vlm:  # the VLM's vision side takes frames on the CPU (its own processor)
        for c in clips:
            c.frames = c.frames.to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4)
    frames = len(clips[0].times)
    print(f"profile {args.config!r} on {device} ({args.threads} threads): clips of {frames} frames "
          f"({args.clip_seconds:g} s at {cfg.sampler.fps:g} fps), trained: "
          f"{sum(p.numel() for p in params) / 1e6:.2f} M of {sum(p.numel() for p in model.parameters()) / 1e6:.2f} M parameters\n")
    print("| batch | step s (median) | samples / s | frames / s |")
    print("| ---: | ---: | ---: | ---: |")
    for b in sizes:
        batch = [clips[i % len(clips)] for i in range(b)]
        times = []
        for i in range(args.steps + 1):
            start = time.perf_counter()
            parts = model(batch, 0.5)
            opt.zero_grad(set_to_none=True)
            parts["total"].backward()
            opt.step()
            if device == "cuda":
                torch.cuda.synchronize()
            if i:  # the first step warms up
                times.append(time.perf_counter() - start)
        t = statistics.median(times)
        print(f"| {b} | {t:.3f} | {b / t:.2f} | {b * frames / t:.1f} |")


if __name__ == "__main__":
    main()

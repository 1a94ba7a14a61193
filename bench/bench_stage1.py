"""Stage-1 training step throughput (`models/stage1.py`): samples/s and frames/s of one optimizer step
(forward through the frozen vision tower and LLM, backward into the streaming modules), in one process.

Clips come from synthetic worlds exported as a LLaVA-style dataset (`stream/synth_export.py`) and are decoded
once, so the table measures the model, not the decoder. Prints a table; medians over the timed steps.
With `--workers N` the steps run on Ray Train instead (`cubestream train-stage1`'s loop: N gloo workers, or one
GPU each with CUDA, `--strategy ddp|fsdp`), each step's clips decoded in it, and the table gives the workers'
own samples/s (all workers together; decoding and checkpoints not counted).
Run: .venv/bin/python bench/bench_stage1.py [--config default] [--clip-seconds 30] [--steps 5]
     .venv/bin/python bench/bench_stage1.py --config vlm --set model.vlm=PATH --set model.temporal_layers=2
     .venv/bin/python bench/bench_stage1.py --config vlm --set model.vlm=PATH --workers 2 --strategy fsdp
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import torch

from actors.cli import settings as overrides
from actors.train_ray import STRATEGIES, Stage1Settings, build_stage1, clip_sample, train_stage1
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
    ap.add_argument("--workers", type=int, default=0,
                    help="run on Ray Train with this many workers (default: in process)")
    ap.add_argument("--strategy", choices=STRATEGIES, default="ddp", help="with --workers: DDP or FSDP")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cfg = load_config(args.config, overrides=overrides(args.set))
    device = "cuda" if torch.cuda.is_available() else "cpu"
    sizes = [int(b) for b in args.batches.split(",")]
    if args.workers:
        return on_ray_train(cfg, args, sizes)
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
    total = sum(p.numel() for m in [model, *model.frozen_modules()] for p in m.parameters())
    print(f"profile {args.config!r} on {device} ({args.threads} threads): clips of {frames} frames "
          f"({args.clip_seconds:g} s at {cfg.sampler.fps:g} fps), trained: "
          f"{sum(p.numel() for p in params) / 1e6:.2f} M of {total / 1e6:.2f} M parameters\n")
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


def on_ray_train(cfg, args, sizes: list[int]) -> None:
    import ray

    use_gpu = torch.cuda.is_available()
    print(f"profile {args.config!r} on Ray Train: {args.workers} {'GPU' if use_gpu else 'CPU (gloo)'} workers, "
          f"{args.strategy}, clips of {args.clip_seconds:g} s at {cfg.sampler.fps:g} fps\n")
    print("| batch per worker | step s (median) | samples / s (all workers) |")
    print("| ---: | ---: | ---: |")
    ray.init(include_dashboard=False, log_to_driver=False, **({} if use_gpu else {"num_cpus": args.workers}))
    try:
        with tempfile.TemporaryDirectory() as d:
            export_synth(f"{d}/data", "llava", videos=args.workers * max(sizes), seconds=args.clip_seconds, questions=2)
            for b in sizes:
                s = Stage1Settings(dataset=f"{d}/data", format="llava", steps=args.steps + 1, batch_size=b,
                                   save_every=1, clip_seconds=args.clip_seconds, strategy=args.strategy)
                result = train_stage1(cfg, s, f"{d}/runs", f"bench-{b}", workers=args.workers, use_gpu=use_gpu)
                rate = statistics.median(result.metrics_dataframe["samples_per_s"].tolist()[1:])  # after the warm-up
                print(f"| {b} | {b * args.workers / rate:.3f} | {rate:.2f} |", flush=True)
    finally:
        ray.shutdown()


if __name__ == "__main__":
    main()

"""`cubestream train-stage1`: stage-1 training (`models/stage1.py`) on Ray Train, data parallel.

`TorchTrainer` runs one copy of the loop per worker (gloo on CPU, NCCL on GPUs, across as many nodes as the Ray
cluster has), data parallel by DDP (each worker holds the whole model) or FSDP (`strategy="fsdp"`, the model's
weights, frozen and trained, sharded over the workers: actors/sharding.py); each worker reads its own share of
the dataset (`stream.datasets`, any format: a question's clip is the `clip_seconds` of video before it is
asked, decoded at the sampler's rate). Every `save_every` steps and at the end rank 0 writes a checkpoint,
which Ray Train copies to `storage` (a shared folder or a cloud URI on a cluster):

    stage1.safetensors   the trained modules alone, keyed as model.safetensors (a profile's `stage1:` loads it)
    train_state.pt       optimizer state (whole, keyed by parameter name) and step, for resuming

Resuming is exact: the batch of every step and its Gumbel noise are fixed by (seed, step, rank), so a run
continued from step k's checkpoint makes the same steps as one that never stopped, under either strategy. A
run restarted under the same name and storage continues from its latest checkpoint (Ray Train restores it);
`resume_from` starts a new run from any checkpoint folder. Metrics (losses, samples/s, and at checkpoints the
loss on the first samples without noise) are reported every step.

The loop is generic over what it trains: `build(cfg, settings)` makes the module (forward(batch, noise) ->
losses with "total"; `trained_state()` / `load_trained(state)` name what a checkpoint keeps;
`frozen_modules()` lists the frozen modules its forward runs that are not its submodules, for FSDP to shard) and
`sample(record, fps, clip_seconds)` turns a dataset record into a batch item; stage 1 (`build_stage1`,
`clip_sample`) is the one this project trains.
"""
from __future__ import annotations

import os
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from actors.sharding import full_state, load_optimizer_state, optimizer_state, shard
from configs import Config
from models.checkpoint import STAGE1_WEIGHTS
from models.cubing import noise_weight
from models.stage1 import ClipSample, Stage1Model
from stream.datasets import VideoError, VideoQA, decode_frames, load_dataset

TRAIN_STATE = "train_state.pt"
FIXED_SAMPLES = 2  # the loss without noise on the dataset's first samples, reported at each checkpoint
STRATEGIES = ("ddp", "fsdp")


@dataclass
class Stage1Settings:
    dataset: str
    format: str
    steps: int = 1000
    batch_size: int = 4  # samples per worker per step
    lr: float = 1e-4
    weight_decay: float = 0.01
    noise_anneal: float = 0.6  # Gumbel noise 1.0 -> 0.01 over this fraction of the steps
    rate_weight: float = 0.1
    clip_seconds: float = 60.0  # of video before each question (StreamingBench's main setting)
    fps: float | None = None  # default: the profile's sampler.fps
    save_every: int = 100
    train_projector: bool = True
    checkpoint: str | None = None  # the profile's weights to start from (default: its own)
    seed: int = 0
    strategy: str = "ddp"  # "ddp": the whole model on every worker; "fsdp": sharded over them (actors/sharding.py)

    def __post_init__(self):
        if self.strategy not in STRATEGIES:
            raise ValueError(f"stage1: strategy must be one of {', '.join(STRATEGIES)}, got {self.strategy!r}")
        for name in ("steps", "batch_size", "lr", "clip_seconds", "save_every"):
            if not getattr(self, name) > 0:
                raise ValueError(f"stage1: {name} must be positive, got {getattr(self, name)!r}")


def base_model(cfg: Config, checkpoint: str | None):
    from actors.worker import load_models
    from models.checkpoint import load_model

    return load_model(cfg, checkpoint) if checkpoint else load_models(cfg)


def build_stage1(cfg: Config, s: Stage1Settings):
    """The profile's stage-1 model: for a pretrained VLM (`model.vlm`), its temporal encoder, cubing head and
    resampler (as the profile sets them) under both frozen halves (models/vlm/stage1.py); else the trained
    model's streaming modules under its frozen tower and LLM."""
    if cfg.model.vlm:
        from models.vlm import load_vlm, resolve_dtype
        from models.vlm.profile import cube_resampler, cubing_head, temporal_encoder
        from models.vlm.stage1 import VLMStage1Model

        m = cfg.model
        device = ("cuda" if torch.cuda.is_available() else "cpu") if m.device == "auto" else m.device
        dtype = str(resolve_dtype(m.dtype, torch.device(device))).removeprefix("torch.")  # where it will run
        if s.strategy == "fsdp":  # loaded into host memory: FSDP moves each worker's shard to its GPU
            device = "cpu"
        vision = load_vlm(m.vlm, "vision", dtype=dtype, device=device, max_pixels=m.max_pixels)
        language = load_vlm(m.vlm, "language", dtype=dtype, device=device)
        return VLMStage1Model(vision, language, temporal_encoder(cfg, vision.width),
                              cubing_head(cfg, vision.width, trained=False), tuple(m.cube_grid), m.min_frames,
                              m.max_frames, rate_weight=s.rate_weight, resampler=cube_resampler(cfg, vision.width))
    encoder, llm = base_model(cfg, s.checkpoint)
    return Stage1Model(cfg, encoder, llm, train_projector=s.train_projector, rate_weight=s.rate_weight)


def clip_sample(q: VideoQA, fps: float, clip_seconds: float) -> ClipSample:
    """The question's clip: the frames of the `clip_seconds` up to its time (the video's end where it has none)."""
    since = 0.0 if q.asked_at is None else max(0.0, q.asked_at - clip_seconds)
    frames = list(decode_frames(q.video, fps, until=q.asked_at, since=since))
    if not frames:
        raise VideoError(f"{q.video}: no frames before t={q.asked_at}")
    end = frames[-1][0]
    frames = [(t, f) for t, f in frames if t >= end - clip_seconds]
    return ClipSample(torch.from_numpy(np.stack([f for _, f in frames])), [t for t, _ in frames],
                      q.question, q.answer)


def batch_indices(n: int, step: int, rank: int, world: int, size: int, seed: int) -> list[int]:
    """Which records rank `rank` trains on at `step`: consecutive slices of a permutation per epoch, fixed by seed."""
    out = []
    for j in range(size):
        k = (step * world + rank) * size + j
        epoch, i = divmod(k, n)
        g = torch.Generator().manual_seed(seed * 100_003 + epoch)
        out.append(int(torch.randperm(n, generator=g)[i]))
    return out


def noise_seed(seed: int, step: int, rank: int, world: int) -> int:
    """The seed of rank `rank`'s Gumbel noise at `step`: the same on a resumed run."""
    return seed * 1_000_003 + step * world + rank


def _loop(config: dict) -> None:
    """One Ray Train worker's loop."""
    import ray.train
    import ray.train.torch

    cfg: Config = config["cfg"]
    s = Stage1Settings(**config["settings"])
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    if not torch.cuda.is_available():
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // ctx.get_local_world_size()))
    fps = s.fps or cfg.sampler.fps
    records = load_dataset(s.dataset, s.format)
    if rank == 0:
        for p in records.problems:
            print(f"skipped {p.where}: {p.reason}")
    items = records.items
    if not items:
        raise ValueError(f"{s.dataset}: no usable {s.format} records")
    bad: set[int] = set()
    build, make_sample = config["build"], config["sample"]

    def sample(i: int):
        """Record i's clip; a video that cannot be decoded is reported once and the next record taken instead."""
        for k in range(len(items)):
            j = (i + k) % len(items)
            if j in bad:
                continue
            try:
                return make_sample(items[j], fps, s.clip_seconds)
            except VideoError as e:
                bad.add(j)
                print(f"rank {rank}: skipped {items[j].video}: {e}")
        raise ValueError(f"{s.dataset}: no record has a video that decodes")

    torch.manual_seed(s.seed)
    model = build(cfg, s)
    start, opt_state = 0, None
    resume = ray.train.get_checkpoint() or (ray.train.Checkpoint(config["resume_from"]) if config.get("resume_from") else None)
    if resume is not None:
        with resume.as_directory() as d:
            model.load_trained(load_file(str(Path(d) / STAGE1_WEIGHTS)))
            state = torch.load(Path(d) / TRAIN_STATE, weights_only=False)
        start, opt_state = state["step"], state["optimizer"]
    if s.strategy == "fsdp":
        run = shard(model, model.frozen_modules(), ray.train.torch.get_device())
    else:
        run = ray.train.torch.prepare_model(model, parallel_strategy_kwargs={"find_unused_parameters": True})
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=s.lr, weight_decay=s.weight_decay)
    if opt_state is not None:
        load_optimizer_state(model, opt, opt_state)
    fixed = [sample(i) for i in range(min(FIXED_SAMPLES, len(items)))]

    for step in range(start, s.steps):
        began = time.perf_counter()
        model.train()
        batch = [sample(i) for i in batch_indices(len(items), step, rank, world, s.batch_size, s.seed)]
        torch.manual_seed(noise_seed(s.seed, step, rank, world))
        parts = run(batch, noise_weight(step, s.steps, s.noise_anneal))
        opt.zero_grad(set_to_none=True)
        parts["total"].backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        done = step + 1
        metrics = {k: float(v.detach()) for k, v in parts.items()} | {
            "step": done, "samples_per_s": s.batch_size * world / (time.perf_counter() - began)}
        if rank == 0:  # progress on the driver's console (Ray forwards the workers' output)
            print(f"step {done}/{s.steps}: " + " ".join(f"{k} {v:.4g}" for k, v in metrics.items() if k != "step"),
                  flush=True)
        if done % s.save_every and done != s.steps:
            ray.train.report(metrics)
            continue
        model.eval()
        with torch.no_grad():
            metrics["fixed_loss"] = float(run(fixed, 0.0)["total"])
        trained, opt_state = full_state(model.trained_state()), optimizer_state(model, opt)  # every rank: collectives
        with tempfile.TemporaryDirectory() as d:
            if rank == 0:
                save_file(trained, str(Path(d) / STAGE1_WEIGHTS))
                torch.save({"step": done, "optimizer": opt_state, "settings": asdict(s)}, Path(d) / TRAIN_STATE)
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(d) if rank == 0 else None)


def train_stage1(cfg: Config, settings: Stage1Settings, storage: str, name: str, workers: int = 2,
                 use_gpu: bool = False, resume_from: str | None = None, build=build_stage1, sample=clip_sample):
    """Train `build`'s module (stage 1 by default) on the Ray cluster this process is connected to; returns
    Ray Train's `Result`."""
    from ray.train import CheckpointConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    trainer = TorchTrainer(
        _loop, train_loop_config={"cfg": cfg, "settings": asdict(settings), "resume_from": resume_from,
                                 "build": build, "sample": sample},
        scaling_config=ScalingConfig(num_workers=workers, use_gpu=use_gpu),
        run_config=RunConfig(name=name, storage_path=str(storage), checkpoint_config=CheckpointConfig(num_to_keep=None)))
    return trainer.fit()

"""`cubestream train`: the whole model, end to end, on clips with questions that a `Recipe` draws.

Each step draws clips, encodes each clip with the parallel form of the streaming model (the same causal
cubing rule that runs live, with annealed Gumbel noise), shows the LLM prompts of the clip's cubes with
their timestamps, and asks the clip's questions. Losses: the answers' cross-entropy (a "when" answer is
POINTER) and the pointer's choice of the cubes each answer rests on (or of none, in windows without them);
a rate term holding the mean cube length at its target; Quicksviewer's 0.001 * mean |z|; where the clips
know where events begin, the boundary head's (`train.boundary_weight`; 0 gives Quicksviewer's unsupervised
recipe); and the recipe's own training-only heads' terms. The synthetic world's recipe is
`models.synthetic.recipe.SyntheticRecipe`.

Each clip's temporal scan starts from the state after the `train.warmup_seconds` before it (no gradient), as a
live stream's has seen what came before; later stretches of a clip continue from the stretch before.

Deterministic from `seed`; `--resume` continues from the last checkpoint with the same random streams.
"""
from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import torch
import torch.nn.functional as F
from tqdm import tqdm

from configs import Config
from models.answerer import named_span, priority, select_cubes
from models.checkpoint import load_model, save_checkpoint
from models.cube_encoder import CubeEncoder
from models.cubing import noise_weight
from models.llm import POINTER, CubeLLM, build_tokenizer
from models.mamba import MambaState

FPS = 2.0  # the sampler's default rate: what the model sees live
MIN_SHOWN = 4  # the fewest cubes a training prompt shows


class ClipQuestion(Protocol):
    """A question about a clip, with what training needs to know of its answer."""
    text: str
    answer: str
    asked_at: float  # stream time it is asked at: the prompt's `now`
    evidence_time: tuple[float, float]  # where what it rests on is seen
    cues: tuple[float, ...]  # the times of the events its answer rests on
    answer_time: float | None  # for a "when" question, the true time: its answer is POINTER


@dataclass
class Clip:
    frames: torch.Tensor  # uint8 [T, H, W, 3]
    warmup: torch.Tensor  # uint8 [N, H, W, 3]: the frames before the first (train.warmup_seconds), which the scan starts after
    times: list[float]
    questions: list[ClipQuestion]
    when_shown: list[ClipQuestion]  # "when" questions whose event the clip shows: the pointer picks its cube ...
    when_unshown: list[ClipQuestion]  # ... and those about a description of which it shows no event: "none"
    boundaries: torch.Tensor  # [T] 1.0 where an event begins since the previous frame


class Recipe(Protocol):
    """What a training run learns from: clips with questions, and training-only heads with their losses."""

    def corpus(self) -> list[str]:
        """Texts whose words a tokenizer built from scratch must know (questions, answers)."""

    def sample_clip(self, rng: random.Random, seeds: tuple[int, int]) -> Clip:
        """One training clip, drawn with `rng` from the sources numbered in [seeds)."""

    def start_heads(self, encoder: CubeEncoder, state: dict | None, init: Path | None, rng: random.Random,
                    progress: bool) -> list[torch.nn.Module]:
        """Build the training-only heads: from a resumed run's `state`, else from beside the checkpoint `init`
        that a fine-tune starts from (or fitted to it); returns them, to train with the model."""

    def head_losses(self, clip: Clip, out) -> dict[str, torch.Tensor]:
        """The heads' loss terms on one encoded clip (`CubeEncoder.encode_clip`'s output)."""

    def add_head_losses(self, total: torch.Tensor, parts: dict[str, torch.Tensor]) -> torch.Tensor:
        """`total` plus the heads' terms among `parts` (means over clips), weighted."""

    def head_state(self) -> dict:
        """The heads' weights for the run's train state (resume)."""

    def save_heads(self, path: Path) -> None:
        """Save the heads beside the checkpoint at `path`, for a fine-tune to start from."""

    def held_out_accuracy(self, encoder: CubeEncoder, llm: CubeLLM) -> float:
        """QA accuracy on held-out clips: the run keeps the best weights by it."""


def warm_states(encoder: CubeEncoder, clips: list[Clip]) -> list[list[MambaState] | None]:
    """Each clip's temporal state after its warm-up frames (None with `train.warmup_seconds` 0), in one
    batch: every clip carries the same number. A clip scanned from zeros is not what runs live, where the
    state has seen the stream so far, and a model trained from zeros answers worse from a warm state."""
    if not clips or not len(clips[0].warmup):
        return [None] * len(clips)
    return encoder.temporal_state(torch.stack([c.warmup for c in clips]))


def clip_cubes(encoder: CubeEncoder, clip: Clip, noise: float, state: list[MambaState] | None = None):
    out = encoder.encode_clip(clip.frames, noise=noise, state=state)
    cubes = [(clip.times[s], clip.times[s + n - 1], tok) for s, n, tok in zip(out.starts, out.lengths, out.tokens)]
    return out, cubes


def cue_cubes(q: ClipQuestion, spans: list[tuple[float, float]]) -> list[int]:
    """The cubes that hold the first frame after each of the question's cues (the events its answer rests on)."""
    return sorted({i for t in q.cues for i, (a, b) in enumerate(spans) if a - 1 / FPS < t <= b})


def shown_cubes(cubes: list, q: ClipQuestion, newest: int, busy: list[bool]) -> list[int]:
    """The cubes one question's prompt shows: picked by the Answerer's own rule from a random budget, with
    the evidence scored above the rest (as a good selector would), so the LLM learns on the short, gappy
    prompts it reads live rather than only on whole clips. Next come the `busy` cubes, where an event
    begins: live, a selector's next best guesses are such cubes, not quiet ones, and the LLM must tell the
    evidence from them (a pointer taught among quiet cubes rarely picks the right one among busy ones). The cubes
    of its cues come before all, whatever time the question names, and the budget always fits them: an
    answer read from cubes the prompt does not show (a count shown part of what it counts; the next entry
    after one at a named time, a minute on) would teach the LLM to guess."""
    spans = [(a, b) for a, b, _ in cubes]
    t0, t1 = q.evidence_time
    evidence = torch.tensor([float(a <= t1 and b >= t0) for a, b in spans])
    scores = torch.rand(len(spans)) + torch.tensor(busy, dtype=torch.float) + 2 * evidence
    cues = cue_cubes(q, spans)
    fit = int(torch.randint(min(max(MIN_SHOWN, newest + len(cues)), len(spans)), len(spans) + 1, ()))
    return select_cubes(cues + [i for i in priority(spans, scores, named_span(q.text)) if i not in cues], fit, newest)


def answer_target(q: ClipQuestion, cubes: list) -> tuple[str, list[int] | None]:
    """What the LLM learns to answer, and which shown cubes the pointer learns to pick. A time answer points
    at one: the cube whose start (the time it will write) is nearest the true time, the later on a tie. Any
    other answer's pointer targets are its cues' cubes: the same head scores every cube of the memory for
    selection, and taught on "when" alone it left out part of the evidence of order questions. A question without cues (what is in view
    now) has none: None."""
    if q.answer_time is not None:
        return POINTER, [min(range(len(cubes)), key=lambda i: (abs(cubes[i][0] - q.answer_time), -i))]
    return q.answer, cue_cubes(q, [(a, b) for a, b, _ in cubes]) if q.cues else None


def absent_window(q: ClipQuestion, cubes: list, longest: int) -> list[int] | None:
    """A run of MIN_SHOWN to `longest` consecutive cubes holding none that the answer rests on (its pointer
    targets and its cues' cubes), as selection's windows over a long memory mostly are; None if none fits."""
    _, targets = answer_target(q, cubes)
    if targets is None:
        return None
    edges = [-1, *sorted(set(targets) | set(cue_cubes(q, [(a, b) for a, b, _ in cubes]))), len(cubes)]
    gaps = [(a + 1, b) for a, b in zip(edges, edges[1:]) if b - a - 1 >= MIN_SHOWN]
    if not gaps:
        return None
    a, b = gaps[int(torch.randint(len(gaps), ()))]
    size = int(torch.randint(MIN_SHOWN, min(longest, b - a) + 1, ()))
    first = a + int(torch.randint(b - a - size + 1, ()))
    return list(range(first, first + size))


def losses(cfg: Config, encoder: CubeEncoder, llm: CubeLLM, clips: list[Clip], noise: float,
           recipe: Recipe | None = None) -> dict:
    """The loss terms of one step over `clips`, and their weighted "total"; with `recipe`, its heads' too."""
    qa, rate, bnd, zpen, probed = [], [], [], [], {}
    for clip, state in zip(clips, warm_states(encoder, clips)):
        out, cubes = clip_cubes(encoder, clip, noise, state)
        for k, v in (recipe.head_losses(clip, out) if recipe is not None else {}).items():
            probed.setdefault(k, []).append(v)
        busy = [bool(clip.boundaries[s:s + n].any()) for s, n in zip(out.starts, out.lengths)]
        shown = [[cubes[i] for i in shown_cubes(cubes, q, cfg.answer.newest_cubes, busy)] for q in clip.questions]
        prompts = [llm.prompt(s, q.text, now=q.asked_at) for s, q in zip(shown, clip.questions)]
        targets = [answer_target(q, s) for s, q in zip(shown, clip.questions)]
        # the pointer also learns where the answer is not: pointer-only rows (no answer to learn without evidence)
        absent = [(q, w) for q in clip.questions if (w := absent_window(q, cubes, cfg.answer.window_cubes))]
        absent = [absent[i] for i in torch.randperm(len(absent))[:cfg.train.absent_prompts].tolist()]
        prompts += [llm.prompt([cubes[i] for i in w], q.text, now=q.asked_at) for q, w in absent]
        targets += [(None, [])] * len(absent)
        # and which of its events a "when" question names, if any (when_rows): the whole clip, as a window
        n = cfg.train.when_prompts
        named = [clip.when_shown[i] for i in torch.randperm(len(clip.when_shown))[:n // 2].tolist()]
        for q in named + clip.when_unshown[:n - len(named)]:
            prompts.append(llm.prompt(cubes, q.text, now=q.asked_at))
            targets.append((None, answer_target(q, cubes)[1] if q in named else []))
        qa.append(llm.loss(prompts, [a for a, _ in targets], [i for _, i in targets]))
        z = out.cubing.logits[0, 1:]
        rate.append((out.cubing.p[0, 1:].mean() - 1.0 / cfg.cubing.trained_target_len) ** 2)
        bnd.append(F.binary_cross_entropy_with_logits(z[:, 1] - z[:, 0], clip.boundaries[1:]))
        zpen.append(z.abs().mean())
    mean = lambda xs: torch.stack(xs).mean()
    parts = {"qa": mean(qa), "rate": mean(rate), "boundary": mean(bnd), "z": mean(zpen)}
    parts["total"] = (parts["qa"] + cfg.train.rate_weight * parts["rate"] + cfg.train.boundary_weight * parts["boundary"]
                      + 0.001 * parts["z"])
    parts |= {k: mean(v) for k, v in probed.items()}
    if probed:
        parts["total"] = recipe.add_head_losses(parts["total"], parts)
    return parts


def train(cfg: Config, out_dir: str | Path, recipe: Recipe, resume: bool = False, steps: int | None = None,
          progress: bool = True, init: str | Path | None = None) -> dict:
    """Train `cfg` into `out_dir` (checkpoint + train_state.pt) on `recipe`'s clips; returns the last step's
    losses and held-out accuracy.

    `init`: start from that checkpoint's weights (and tokenizer) with a fresh optimizer: fine-tuning.
    """
    out_dir = Path(out_dir)
    tc = cfg.train
    steps = steps or tc.steps
    torch.manual_seed(cfg.seed)
    rng = random.Random(cfg.seed)
    state_path = out_dir / "train_state.pt"
    if resume and state_path.is_file():
        encoder, llm = load_model(cfg, out_dir)
        state = torch.load(state_path, weights_only=False)
    elif init:
        (encoder, llm), state = load_model(cfg, init), None
    else:
        tokenizer = None if cfg.llm.pretrained else build_tokenizer(recipe.corpus())  # a pretrained LLM's own
        encoder, llm, state = CubeEncoder(cfg), CubeLLM(cfg, tokenizer=tokenizer), None
    heads = recipe.start_heads(encoder, state, Path(init) if init else None, rng, progress)
    encoder.train(), llm.train()
    for name in tc.freeze:
        (llm if name == "llm" else getattr(encoder, name)).requires_grad_(False)
    params = [p for m in (encoder, llm, *heads) for p in m.parameters() if p.requires_grad]
    partly = {id(p) for p in llm.partly_trained}  # weight decay would shrink their frozen rows
    groups = [{"params": [p for p in params if id(p) not in partly]}]
    groups += [{"params": llm.partly_trained, "weight_decay": 0.0}] if partly else []
    opt = torch.optim.AdamW(groups, lr=tc.lr, weight_decay=tc.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 100) * 0.5 * (1 + math.cos(math.pi * min(1.0, s / steps))))
    start = 0
    if state:
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        rng.setstate(state["rng"])
        torch.set_rng_state(state["torch_rng"])
        start = state["step"]

    def save(step):
        save_checkpoint(out_dir, encoder, llm)
        recipe.save_heads(out_dir)
        torch.save({"step": step, "optimizer": opt.state_dict(), "scheduler": sched.state_dict(), **recipe.head_state(),
                    "rng": rng.getstate(), "torch_rng": torch.get_rng_state(), "best": best}, state_path)

    best = state["best"] if state else -1.0
    began = time.monotonic()
    result = {}
    bar = tqdm(range(start, steps), initial=start, total=steps, disable=not progress, desc="train")
    for step in bar:
        clips = [recipe.sample_clip(rng, (0, tc.train_seeds)) for _ in range(tc.clips_per_step)]
        parts = losses(cfg, encoder, llm, clips, noise_weight(step, cfg.train.steps, cfg.train.noise_anneal), recipe)
        opt.zero_grad(set_to_none=True)
        parts["total"].backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        result = {k: v.item() for k, v in parts.items()}
        bar.set_postfix({k: f"{v:.3f}" for k, v in result.items()})
        done = step + 1
        out_of_time = (time.monotonic() - began) / 60 > tc.max_minutes
        if done % tc.eval_every == 0 or done == steps or out_of_time:
            result["eval_qa"] = recipe.held_out_accuracy(encoder, llm)
            bar.write(f"step {done}: " + " ".join(f"{k} {v:.3f}" for k, v in result.items()))
            if result["eval_qa"] > best:  # held-out accuracy is noisy and can fall late: keep the best weights too
                best = result["eval_qa"]
                save_checkpoint(out_dir / "best", encoder, llm)
                recipe.save_heads(out_dir / "best")
        if done % tc.save_every == 0 or done == steps or out_of_time:
            save(done)
        if out_of_time:
            # lr and Gumbel noise follow the step schedule: a run cut by time stops before they have come down
            bar.write(f"stopping at step {done} of {steps}: train.max_minutes ({tc.max_minutes}) reached, with the "
                      f"learning rate at {sched.get_last_lr()[0] / tc.lr:.0%} of its peak and the Gumbel noise at "
                      f"{noise_weight(done, cfg.train.steps, cfg.train.noise_anneal):.2f} (0.01 at the schedule's end); `--resume` finishes the schedule, "
                      f"or set train.steps to what fits")
            break
    result["step"] = done if steps > start else start
    return result

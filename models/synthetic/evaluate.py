"""`cubestream eval`: the streaming model on held-out synthetic worlds, longer than any clip trained on.

Each world is streamed frame by frame through `StreamEncoder` (the live path, not the training form),
the closed cubes go into a `RollingMemory` under the profile's token budget, and questions generated from the world's log are asked at the stream's end
through the `Answerer` (as multiple choice where the question offers its answers). Where the profile's readers of
the whole memory (`llm.readers`) are fitted and switched on, every question is also answered by the general path,
the LLM alone over the cubes it selected (readers and locator off), reported beside it as `llm_alone`.
Reported: QA accuracy overall and by recall slice, boundary precision/recall/F1
against the true event times (1 s tolerance), mean frames per cube, tokens kept per frame and the
compression against the vision tower's per-frame patch tokens. Boundaries are the head's own decisions:
a cube closed by max_len (a quiet stretch cut to bound memory granularity) claims no event. Baselines use the same trained weights,
the same memory and prompt budgets, and the same tokens per frame as the adaptive run: L is its mean
frames per cube, rounded (the head's `trained_target_len` when adaptive is not run):

- fixed:   cubes of exactly L frames (min_len = max_len);
- uniform: one frame in every L, each its own cube (uniform frame sampling);
- recent:  adaptive cubes, but the LLM sees only the newest cubes that fit (no selection).
"""
from __future__ import annotations

import copy
import dataclasses
import random
from collections import defaultdict
from dataclasses import dataclass, field

from configs import Config
from models.answerer import Answerer
from models.cube_encoder import CubeEncoder
from models.llm import CubeLLM
from models.stream_encoder import StreamEncoder
from stream.cube import Cube
from stream.memory import RollingMemory
from stream.questions import KINDS, SLICES, is_correct, make_questions
from stream.synth import SynthWorld

FPS = 2.0
RECALL_AT = (1, 3, 5)  # selection recall@k: the asked event's cube among the k best-scored cited cubes
RECALL_MIN_AGE = 10.0  # only questions whose evidence ended this long before: the newest cubes are always shown
METHODS = ("adaptive", "fixed", "uniform", "recent")
SHARED = ("tp", "n_pred", "n_true", "frames", "cubes", "tokens")  # what streaming and cubing score: every path's


@dataclass
class Scores:
    right: dict = field(default_factory=lambda: defaultdict(int))
    total: dict = field(default_factory=lambda: defaultdict(int))
    tp: int = 0
    n_pred: int = 0
    n_true: int = 0
    frames: int = 0
    cubes: int = 0
    tokens: int = 0
    cited: list = field(default_factory=list)  # per past-evidence question: rank of the first right citation, or None
    answers: list = field(default_factory=list)  # one record a question: what was asked and answered, and where

    def summary(self, patch_tokens: int) -> dict:
        acc = {k: self.right[k] / self.total[k] for k in self.total if self.total[k]}
        p = self.tp / self.n_pred if self.n_pred else 0.0
        r = self.tp / self.n_true if self.n_true else 0.0
        per_frame = self.tokens / max(self.frames, 1)
        return {"qa": acc.get("all", 0.0), "qa_by_slice": {s: acc.get(s) for s in SLICES},
                "qa_by_kind": {k: acc.get(k) for k in KINDS},
                "questions": self.total["all"], "boundary_precision": p, "boundary_recall": r,
                "boundary_f1": 2 * p * r / (p + r) if p + r else 0.0,
                "frames_per_cube": self.frames / max(self.cubes, 1), "tokens_per_frame": per_frame,
                "compression": patch_tokens / per_frame if per_frame else float("inf"),
                **{f"recall@{k}": sum(r is not None and r < k for r in self.cited) / len(self.cited) if self.cited else None
                   for k in RECALL_AT}, "answers": self.answers}


def match_boundaries(pred: list[float], true: list[float], tol: float = 1.0) -> int:
    """Greedy one-to-one matching, each prediction to the nearest unused true time within `tol`; true positives."""
    free, tp = list(true), 0
    for t in pred:
        near = [u for u in free if abs(t - u) <= tol]
        if near:
            free.remove(min(near, key=lambda u: abs(t - u)))
            tp += 1
    return tp


def stream_world(encoder: StreamEncoder, world: SynthWorld, seconds: float, every: int = 1) -> list[Cube]:
    """Stream a world through the live path; `every` > 1 keeps one frame in `every` (uniform sampling)."""
    encoder.add_stream("eval")
    cubes = []
    for i in range(0, int(seconds * FPS), every):
        t = i / FPS
        cubes += encoder.push(["eval"], [world.frame_at(t)], [t])
    last = encoder.remove_stream("eval")
    return cubes + ([last] if last else [])


def evaluate(cfg: Config, encoder: CubeEncoder, llm: CubeLLM, seeds: list[int], seconds: float,
             questions: int = 24, methods: tuple[str, ...] = METHODS, log=print) -> dict:
    results = {}
    patch_tokens = encoder.vision.grid**2
    for method in sorted(methods, key=lambda m: m != "adaptive"):  # adaptive first: the baselines match its rate
        # without an adaptive run, the mean its head was trained to hold (target_len is a prior, often ~1)
        target = max(1, round(results["adaptive"]["frames_per_cube"] if "adaptive" in results
                              else cfg.cubing.trained_target_len))
        enc_cfg = copy.deepcopy(cfg)
        if method in ("fixed", "uniform"):
            enc_cfg.cubing.min_len = enc_cfg.cubing.max_len = target if method == "fixed" else 1
        model = CubeEncoder(enc_cfg).eval()  # same weights; only the cubing rule's limits differ
        model.load_state_dict(encoder.state_dict())
        answer_cfg = copy.deepcopy(cfg.answer)
        answer_cfg.citations = max(RECALL_AT)
        if method == "recent":
            answer_cfg.selection = "recent"
        paths = {"": (Answerer(llm, answer_cfg), Scores())}
        if llm.readers is not None and (answer_cfg.reader or answer_cfg.locator):  # the general path beside them
            paths["llm_alone"] = (Answerer(llm, dataclasses.replace(answer_cfg, reader=False, locator=False)), Scores())
        scores = paths[""][1]  # what streaming and cubing score, which every path shares
        for seed in seeds:
            world = SynthWorld(seed=seed, width=cfg.vision.image_size, height=cfg.vision.image_size)
            cubes = stream_world(StreamEncoder(model), world, seconds, every=target if method == "uniform" else 1)
            scores.frames += int(seconds * FPS)
            scores.cubes += len(cubes)
            scores.tokens += sum(c.tokens.shape[0] for c in cubes)
            if method != "uniform":
                # a cube split by max_len makes no claim of an event; only the head's boundaries are scored
                pred = [c.start for prev, c in zip(cubes, cubes[1:]) if not prev.forced]
                true = world.boundary_times(0.5, seconds)
                scores.tp += match_boundaries(pred, true)
                scores.n_pred += len(pred)
                scores.n_true += len(true)
            memory = RollingMemory("eval", cfg.memory.token_budget)  # as live: bounded, old cubes merged
            for c in cubes:
                memory.add(c)
            t_now = cubes[-1].end
            for q in make_questions(world, t_now, random.Random(seed), n=questions):
                for answerer, path_scores in paths.values():
                    _ask(answerer, path_scores, memory.entries(), q, seed, t_now)
        results[method] = scores.summary(patch_tokens)
        if "llm_alone" in paths:
            alone = dataclasses.replace(paths["llm_alone"][1], **{k: getattr(scores, k) for k in SHARED})
            results[method]["llm_alone"] = alone.summary(patch_tokens)
        log(f"{method}: qa {results[method]['qa']:.3f}"
            + (f" (LLM alone {results[method]['llm_alone']['qa']:.3f})" if "llm_alone" in paths else "")
            + f" boundary_f1 {results[method]['boundary_f1']:.3f}")
    return results


def _ask(answerer: Answerer, scores: Scores, entries: list, q, seed: int, t_now: float) -> None:
    """Ask `q` of a memory's `entries` and score the answer."""
    ans = answerer.answer(entries, q.text, q.options or None)
    ok = is_correct(q, ans.text)
    if q.evidence_time[1] < t_now - RECALL_MIN_AGE:
        scores.cited.append(_citation_rank(ans, q))
    for key in ("all", q.age_slice, q.kind):
        scores.right[key] += ok
        scores.total[key] += 1
    scores.answers.append({"world": seed, "question": q.text, "kind": q.kind, "slice": q.age_slice,
                           "truth": q.answer, "evidence": q.evidence_time, "answer": ans.text, "right": ok,
                           "cited": [(c.start, c.end) for c in ans.citations]})


def _citation_rank(ans, q, slack: float = 1.0) -> int | None:
    t0, t1 = q.evidence_time
    for rank, c in enumerate(ans.citations):
        if c.start <= t1 + slack and c.end >= t0 - slack:
            return rank
    return None


def table(results: dict) -> str:
    """One row a method and answer path: with the profile's readers (where fitted) and the LLM alone."""
    head = "| method | answered by | QA all | " + " | ".join(f"QA {s}" for s in SLICES) + \
           " | boundary P / R / F1 | recall@1 / @3 / @5 | frames / cube | tokens / frame | compression |"
    rows = [head, "|" + " --- |" * (head.count("|") - 1)]
    for m, r in results.items():
        paths = [("LLM alone", r["llm_alone"]), ("LLM + readers", r)] if "llm_alone" in r else [("LLM", r)]
        for by, p in paths:
            sl = " | ".join("-" if p["qa_by_slice"][s] is None else f"{p['qa_by_slice'][s]:.1%}" for s in SLICES)
            bnd = "-" if m == "uniform" else f"{p['boundary_precision']:.2f} / {p['boundary_recall']:.2f} / {p['boundary_f1']:.2f}"
            rec = " / ".join("-" if p[f"recall@{k}"] is None else f"{p[f'recall@{k}']:.2f}" for k in RECALL_AT)
            rows.append(f"| {m} | {by} | {p['qa']:.1%} | {sl} | {bnd} | {rec} | {p['frames_per_cube']:.2f} | "
                        f"{p['tokens_per_frame']:.3f} | {p['compression']:.0f}x |")
    return "\n".join(rows)

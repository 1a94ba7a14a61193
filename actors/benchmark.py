"""`cubestream eval --dataset DIR --format ovo|streamingbench|llava`: a video QA benchmark replayed as live streams.

Each video is decoded at the sampler's rate (`stream.datasets.decode_frames`) and pushed frame by frame
through the live path: an `EncoderWorker` (the object the encoder actor wraps: the StreamEncoder's recurrent
step, online cubing, the rolling memory), not the batch clip form. Each question is asked when the stream
reaches its time, before any later frame is pushed, over the memory as it stands then: the answerer cannot
see a frame after it (the replay checks it and refuses to go on otherwise). Questions without a time are
asked at the video's end.

Every method sees the same frames at the same times; a method is a cubing model (its weights and cubing
rule) and an answerer over the memory entries, which is pluggable (`StreamAnswerer`): the profile's own
(`Answerer` over its LLM), or any object with the same `answer` call. Beside the profile's adaptive cubes
runs the recent-frames baseline (SimpleStream): the same weights and answerer budget, every frame its own
cube, and the answerer shown only the newest frames (N, or as many as fit the same token budget).

Scored: accuracy overall, per OVO-Bench split (backward tracing: old evidence; real-time; forward) and per
task; a multiple-choice answer is right when it is the right option (its
text, or its letter), a free answer when it equals the truth (case, spaces and end punctuation aside). A
question the answerer refuses (say, an option of words the model cannot read) counts as wrong and is listed.
Videos that cannot be decoded are reported and their questions left out.
"""
from __future__ import annotations

import copy
import math
import re
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from actors.worker import EncoderWorker, load_models
from configs import Config
from models.answerer import Answerer, QuestionError
from models.cube_encoder import CubeEncoder
from stream.datasets import Dataset, VideoError, VideoQA, decode_frames


class StreamAnswerer(Protocol):
    def answer(self, entries: Sequence, question: str, options: Sequence[str] | None = None):
        """entries: memory entries (start, end, tokens) in time order -> an object with `.text`."""


@dataclass
class Method:
    name: str
    encoder: object  # this method's live encoder: a CubeEncoder (weights and cubing rule) or a VLMStreamEncoder
    answerer: StreamAnswerer
    newest: int | None = None  # show the answerer only the newest this many memory entries (None: all)


@dataclass
class _Tally:
    right: dict = field(default_factory=lambda: defaultdict(int))
    total: dict = field(default_factory=lambda: defaultdict(int))
    chance: float = 0.0  # sum over questions of 1 / options (a free question adds 0)
    refused: int = 0

    def add(self, task: str, split: str, ok: bool, options: int) -> None:
        for key in ("all", task) + ((f"split:{split}",) if split else ()):
            self.right[key] += ok
            self.total[key] += 1
        self.chance += 1 / options if options else 0.0

    def summary(self) -> dict:
        n = self.total["all"]
        return {"accuracy": self.right["all"] / n if n else None, "questions": n,
                "chance": self.chance / n if n else None, "refused": self.refused,
                "by_split": {k[6:]: self.right[k] / self.total[k] for k in sorted(self.total) if k.startswith("split:")},
                "by_task": {k: self.right[k] / self.total[k] for k in sorted(self.total)
                            if k != "all" and not k.startswith("split:")}}


def _norm(text: str) -> str:
    return " ".join(text.lower().strip().strip(".!?").split())


def is_right(q: VideoQA, text: str) -> bool:
    """The right option by its text or letter ("B", "B.", "B. text"), or the free answer itself."""
    if q.options:
        m = re.match(r"^\(?([A-Z])(?:[.):]|$)", text.strip())
        if m and ord(m.group(1)) - 65 < len(q.options):
            return q.options[ord(m.group(1)) - 65] == q.answer
    return _norm(text) == _norm(q.answer)


def replay(dataset: Dataset, methods: list[Method], cfg: Config, fps: float | None = None,
           log: Callable[[str], None] = print) -> dict:
    """Replay every video of `dataset` through each method's live encoder, asking its questions at their times."""
    fps = fps or cfg.sampler.fps
    tallies = {m.name: _Tally() for m in methods}
    answers, problems = [], [{"where": p.where, "reason": p.reason} for p in dataset.problems]
    run_cfg = copy.deepcopy(cfg)  # a throwaway store: no fsync, no encoder state saved (nothing resumes it)
    run_cfg.memory.fsync = False
    run_cfg.runtime.state_every = 2**31
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="cubestream-eval-") as tmp:
        run_cfg.runtime.snapshot_dir = tmp
        workers = {m.name: EncoderWorker(m.encoder, run_cfg) for m in methods}
        for n, (video, questions) in enumerate(dataset.by_video().items()):
            try:
                asked = _replay_video(f"video{n}", video, questions, methods, workers, fps)
            except VideoError as e:
                problems.append({"where": str(video), "reason": str(e)})
                log(f"skipped {video}: {e}")
                continue
            for rec in asked:
                t = tallies[rec["method"]]
                t.add(rec["task"], rec["split"], rec["right"], len(rec["options"]))
                t.refused += rec["refused"] is not None
            answers += asked
            log(f"{video.name}: {len(questions)} questions ({time.perf_counter() - started:.0f} s)")
    return {"fps": fps, "methods": {name: t.summary() for name, t in tallies.items()}, "problems": problems,
            "answers": answers}


def _replay_video(sid: str, video, questions: list[VideoQA], methods: list[Method],
                  workers: dict[str, EncoderWorker], fps: float) -> list[dict]:
    for w in workers.values():
        w.add_stream(sid)
    pending, out = list(questions), []
    now = -math.inf  # the stream time of the newest frame pushed
    try:
        last = max((q.asked_at for q in questions if q.asked_at is not None), default=None)
        until = None if any(q.asked_at is None for q in questions) else last
        for t, frame in decode_frames(video, fps, until=until):
            while pending and pending[0].asked_at is not None and pending[0].asked_at < t:
                out += _ask(sid, pending.pop(0), methods, workers, now)
            for w in workers.values():
                w.push([(sid, frame, t, time.time())])
            now = t
        while pending:  # at the video's end: questions without a time, or timed after its last frame
            out += _ask(sid, pending.pop(0), methods, workers, now)
    finally:
        for w in workers.values():
            w.remove_stream(sid, forget=True)
    return out


def _ask(sid: str, q: VideoQA, methods: list[Method], workers: dict[str, EncoderWorker], now: float) -> list[dict]:
    out = []
    for m in methods:
        entries = workers[m.name].window(sid)
        if m.newest is not None:
            entries = entries[-m.newest:]
        seen = max((e.end for e in entries), default=-math.inf)
        if seen > now or (q.asked_at is not None and seen > q.asked_at):
            raise RuntimeError(f"{m.name}: the memory holds frames after the question's time ({seen} > {q.asked_at})")
        refused = None
        try:
            text = m.answerer.answer(entries, q.question, list(q.options) or None).text
        except QuestionError as e:
            text, refused = "", str(e)
        out.append({"method": m.name, "id": q.id, "video": str(q.video), "task": q.task, "split": q.split,
                    "question": q.question,
                    "options": list(q.options), "truth": q.answer, "asked_at": q.asked_at if q.asked_at is not None
                    else now, "seen_until": seen if entries else None, "entries": len(entries), "answer": text,
                    "right": is_right(q, text) and refused is None, "refused": refused})
    return out


def profile_methods(cfg: Config, encoder: CubeEncoder | None = None, llm=None, recent_frames: int | None = None,
                    device: str = "cpu") -> list[Method]:
    """The profile's adaptive cubes and the recent-frames baseline (SimpleStream) with the same weights and
    answer budget: every frame a cube, the newest `recent_frames` of them shown (None: as many as fit), to the
    LLM alone (the default profile's readers of the whole memory are off for it).
    A profile with `model.vlm` builds both from its VLM; else from `encoder` and `llm` (default: the profile's)."""
    recent_cfg = copy.deepcopy(cfg.answer)
    recent_cfg.selection = "recent"
    recent_cfg.reader = recent_cfg.locator = False  # the LLM over the newest frames alone, not a reader of all of them
    if cfg.model.vlm:
        return _vlm_methods(cfg, recent_cfg, recent_frames, device)
    if encoder is None:
        encoder, llm = load_models(cfg)
    frames_cfg = copy.deepcopy(cfg)
    frames_cfg.cubing.min_len = frames_cfg.cubing.max_len = 1
    frames_cfg.cubing.event_max_len = None
    per_frame = CubeEncoder(frames_cfg).eval()
    per_frame.load_state_dict(encoder.state_dict())
    return [Method("adaptive", encoder.eval(), Answerer(llm, cfg.answer)),
            Method("recent-frames", per_frame, Answerer(llm, recent_cfg), newest=recent_frames)]


def _vlm_methods(cfg: Config, recent_cfg, recent_frames: int | None, device: str) -> list[Method]:
    """For a VLM, a frame of the baseline is a cube of one frame pooled to the same space grid (t = 1); the
    profile's resampler (queries for its cube grid) is the adaptive method's alone."""
    from models.vlm import load_vlm
    from models.vlm.answerer import VLMAnswerer
    from models.vlm.profile import cube_resampler, cubing_head, temporal_encoder
    from models.vlm.stream_encoder import VLMStreamEncoder

    m = cfg.model
    device = device if m.device == "auto" else m.device
    vision = load_vlm(m.vlm, "vision", dtype=m.dtype, device=device, max_pixels=m.max_pixels)
    language = load_vlm(m.vlm, "language", dtype=m.dtype, device=device)
    grid, frame_grid = tuple(m.cube_grid), (1, *m.cube_grid[1:])
    temporal = temporal_encoder(cfg, vision.width)
    head, resampler = cubing_head(cfg, vision.width), cube_resampler(cfg, vision.width)
    return [Method("adaptive", VLMStreamEncoder(vision, grid, m.min_frames, m.max_frames, temporal, device, head,
                                                resampler),
                   VLMAnswerer(language, cfg.answer, grid)),
            Method("recent-frames", VLMStreamEncoder(vision, frame_grid, 1, 1, temporal, device),
                   VLMAnswerer(language, recent_cfg, frame_grid), newest=recent_frames)]


def table(results: dict) -> str:
    splits = sorted({t for r in results["methods"].values() for t in r["by_split"]})
    tasks = sorted({t for r in results["methods"].values() for t in r["by_task"]})
    head = "| method | accuracy | chance | questions | refused | " + " | ".join(splits + tasks) + " |"
    rows = [head, "|" + " --- |" * (head.count("|") - 1)]
    pct = lambda v: "-" if v is None else f"{v:.1%}"
    for name, r in results["methods"].items():
        rows.append(f"| {name} | {pct(r['accuracy'])} | {pct(r['chance'])} | {r['questions']} | {r['refused']} | "
                    + " | ".join([pct(r["by_split"].get(t)) for t in splits] + [pct(r["by_task"].get(t)) for t in tasks])
                    + " |")
    return "\n".join(rows)

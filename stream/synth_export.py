"""`cubestream export-synth`: synthetic worlds written as a video dataset (mp4 + JSON) in a format of
`stream.datasets`, so that the real-video recipe (training, the benchmark harness) runs end to end without
data, and a user can see what each format looks like.

Each world becomes `videos/synth_<seed>.mp4` (H.264, the world's frames at `fps`) and questions from its
log (`stream.questions`): for "ovo" and "streamingbench" asked at times spread over the video (so a live
replay must answer them from what came before), as multiple choice; for "llava", asked at the video's end,
with free answers (its training form). Multiple-choice options: the shapes or colours of the world, counts
0-5 (or up to the truth), yes / no, the pair an order question names or, for "what entered next", the
object and three others. "When" questions, whose answers are times, are left out.
"""
from __future__ import annotations

import json
import random
from pathlib import Path

import av

from stream.questions import make_questions
from stream.synth import SynthWorld

# "when" questions are left out: their answers are times, which the default LLM writes by pointing at a cube
KINDS = ("shape", "colour", "count", "order", "present")


def write_video(world: SynthWorld, path: Path, seconds: float, fps: float) -> int:
    """The world's first `seconds` at `fps` as an H.264 mp4; returns the frames written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    n = int(seconds * fps)
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=round(fps) if float(fps).is_integer() else fps)
        stream.width, stream.height = world.width, world.height
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": "12", "preset": "veryfast"}  # near-lossless: small colours stay apart
        for i in range(n):
            frame = av.VideoFrame.from_ndarray(world.frame_at(i / fps), format="rgb24")
            out.mux(stream.encode(frame))
        out.mux(stream.encode())
    return n


def options_for(q, world: SynthWorld, rng: random.Random) -> tuple[str, ...]:
    """The options a multiple-choice form of `q` offers (its own where it has them)."""
    if q.options:
        return tuple(q.options)
    if q.kind == "shape":
        return tuple(world.params.shapes)
    if q.kind == "colour":
        return tuple(world.params.colours)
    if q.kind == "count":
        return tuple(str(i) for i in range(max(5, int(q.answer)) + 1))
    if q.kind == "order":  # "what entered next": the truth and three other objects, in a random order
        others = [f"{c} {s}" for c in world.params.colours for s in world.params.shapes if f"{c} {s}" != q.answer]
        opts = [q.answer, *rng.sample(others, 3)]
        rng.shuffle(opts)
        return tuple(opts)
    raise ValueError(f"no options for a {q.kind!r} question")


def export_synth(out_dir: str | Path, fmt: str, videos: int = 4, seconds: float = 120.0, questions: int = 6,
                 fps: float = 2.0, size: int = 64, first_seed: int = 0) -> Path:
    """Write `videos` worlds (seeds first_seed, first_seed + 1, ...) and their questions; returns the annotation file."""
    if fmt not in ("llava", "ovo", "streamingbench"):
        raise ValueError(f"unknown format {fmt!r}")
    if videos < 1 or questions < 1 or not seconds > 0 or not fps > 0:
        raise ValueError("videos and questions must be >= 1, seconds and fps > 0")
    out_dir = Path(out_dir)
    records = []
    for seed in range(first_seed, first_seed + videos):
        world = SynthWorld(seed=seed, width=size, height=size)
        name = f"videos/synth_{seed}.mp4"
        frames = write_video(world, out_dir / name, seconds, fps)
        end = (frames - 1) / fps
        rng = random.Random(seed)
        if fmt == "llava":
            qs = make_questions(world, end, rng, n=questions, kinds=KINDS)
            turns = []
            for q in qs:
                turns += [{"from": "human", "value": f"<image>\n{q.text}"}, {"from": "gpt", "value": q.answer}]
            if turns:
                records.append({"id": f"synth_{seed}", "video": name, "conversations": turns, "data_source": "synth"})
            continue
        # questions asked at times spread over the video's second half, a few at each
        times = sorted({round(end * (0.5 + 0.5 * (i + 1) / questions)) for i in range(questions)})
        asked = [(t, q) for t in times for q in make_questions(world, float(t), rng, n=2, kinds=KINDS)]
        asked = asked[:questions]
        if fmt == "ovo":
            for i, (t, q) in enumerate(asked):
                opts = options_for(q, world, rng)
                records.append({"id": f"synth_{seed}_{i}", "video": name, "task": q.kind, "question": q.text,
                                "options": list(opts), "realtime": t, "gt": opts.index(q.answer)})
        else:
            items = []
            for t, q in asked:
                opts = options_for(q, world, rng)
                letters = [chr(65 + i) for i in range(len(opts))]
                items.append({"task_type": q.kind, "question": q.text, "time_stamp": _hms(t),
                              "options": [f"{a}. {o}" for a, o in zip(letters, opts)],
                              "answer": letters[opts.index(q.answer)]})
            if items:
                records.append({"video_path": name, "video_categories": "synth", "questions": items})
    path = out_dir / f"{fmt}.json"
    path.write_text(json.dumps(records, indent=1))
    return path


def _hms(t: float) -> str:
    t = int(round(t))
    return f"{t // 3600:02d}:{t // 60 % 60:02d}:{t % 60:02d}"


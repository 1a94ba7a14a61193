"""Video question-answer datasets in the formats users have, and their videos decoded at a sampler's rate.

A dataset is a folder of annotation files (`*.json`: a list of records; `*.jsonl`: one record a line) and
the videos they name (absolute paths, or relative to the annotation file's folder). Each format becomes
`VideoQA` records: a video, a question, its answer, the options it allows (multiple choice) and the stream
time it is asked at.

- "llava": LLaVA-Video-178K: `{"id", "video", "conversations": [{"from": "human", "value": "<image>\\n..."},
  {"from": "gpt", "value": ...}, ...]}`; each human turn and the gpt turn after it is one question, asked at
  the video's end. A question that lists its options as lines "A. ..." is multiple choice (the answer is
  the option its letter names).
- "ovo": OVO-Bench: `{"id", "video", "task", "question", "options", "realtime", "gt"}` (backward tracing and
  real-time perception: options, `gt` the index of the right one, asked at `realtime` s) and forward active
  responding, `{"id", "video", "task", "test_info": [{"realtime", "count" | "type"}, ...]}`: REC asks "how many
  times did they <activity>?" at each point, SSR whether <step> is being done now and CRR whether the question
  can be answered yet (yes / no, `type` 1 for yes).
- "streamingbench": StreamingBench: `{"video_path", "questions": [{"task_type", "question", "time_stamp":
  "HH:MM:SS", "options": ["A. ...", ...], "answer": "A"}]}`.

A record that cannot be read (malformed JSON line, missing keys, a video that is not there) is reported as a
`Problem` and skipped; so is a video FFmpeg cannot decode (`VideoError`, raised by `decode_frames`, which the
caller reports). Nothing about one bad entry stops the rest.
"""
from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import av
import numpy as np

FORMATS = ("llava", "ovo", "streamingbench")
_LETTERED = re.compile(r"^\s*\(?([A-Z])[.):]\s*(.+?)\s*$")  # "A. text", "(B) text", "C: text"


@dataclass(frozen=True)
class VideoQA:
    id: str
    video: Path
    question: str
    answer: str  # the truth: the right option's text where there are options, else free text
    options: tuple[str, ...] = ()
    asked_at: float | None = None  # stream seconds the question is asked at; None: at the video's end
    task: str = ""
    split: str = ""  # OVO-Bench's: "backward" (old evidence), "realtime" (now) or "forward" (evidence to come)


@dataclass(frozen=True)
class Problem:
    where: str  # file[:line] or the video
    reason: str


@dataclass
class Dataset:
    items: list[VideoQA] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)

    def by_video(self) -> dict[Path, list[VideoQA]]:
        """The questions of each video, in the order they are asked (those at the video's end last)."""
        out: dict[Path, list[VideoQA]] = {}
        for q in self.items:
            out.setdefault(q.video, []).append(q)
        for qs in out.values():
            qs.sort(key=lambda q: float("inf") if q.asked_at is None else q.asked_at)
        return out


class VideoError(RuntimeError):
    """A video that cannot be decoded (missing, not a video, corrupt)."""


def load_dataset(root: str | Path, fmt: str) -> Dataset:
    """Every record of the annotation files in `root` (a folder, or one annotation file) read as `fmt`."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown dataset format {fmt!r}; the formats are {', '.join(FORMATS)}")
    root = Path(root)
    files = [root] if root.is_file() else sorted(p for p in root.glob("*") if p.suffix in (".json", ".jsonl"))
    if not files:
        raise FileNotFoundError(f"no annotation files (*.json, *.jsonl) in {root}")
    out = Dataset()
    for path in files:
        for where, record in _records(path, out.problems):
            try:
                items = _PARSERS[fmt](record, path.parent)
            except (KeyError, TypeError, ValueError, IndexError, AttributeError) as e:
                out.problems.append(Problem(where, f"not a {fmt} record: {type(e).__name__}: {e}"))
                continue
            for q in items:
                if not q.video.is_file():
                    out.problems.append(Problem(where, f"video {q.video} is missing"))
                    break
                out.items.append(q)
    return out


def _records(path: Path, problems: list[Problem]) -> Iterator[tuple[str, object]]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        problems.append(Problem(str(path), f"cannot read: {e}"))
        return
    if path.suffix == ".jsonl":
        for n, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    yield f"{path}:{n}", json.loads(line)
                except json.JSONDecodeError as e:
                    problems.append(Problem(f"{path}:{n}", f"malformed JSON: {e}"))
        return
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        problems.append(Problem(str(path), f"malformed JSON: {e}"))
        return
    if not isinstance(data, list):
        problems.append(Problem(str(path), "a .json annotation file holds a list of records"))
        return
    for n, record in enumerate(data):
        yield f"{path}[{n}]", record


def _video(name, base: Path) -> Path:
    if not isinstance(name, str) or not name:
        raise ValueError(f"a video path is a non-empty string, got {name!r}")
    p = Path(name)
    return p if p.is_absolute() else base / p


def _text(value, what: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{what} is a non-empty string, got {value!r}")
    return value.strip()


def _seconds(value) -> float:
    """Seconds from a number or "HH:MM:SS[.f]" / "MM:SS"."""
    if isinstance(value, str):
        parts = [float(p) for p in value.strip().split(":")]
        if not 1 <= len(parts) <= 3:
            raise ValueError(f"a time is [HH:]MM:SS, got {value!r}")
        t = 0.0
        for p in parts:
            t = 60 * t + p
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        t = float(value)
    else:
        raise ValueError(f"a time is seconds or HH:MM:SS, got {value!r}")
    if not t >= 0:
        raise ValueError(f"a time is >= 0, got {value!r}")
    return t


def split_options(lines: list[str]) -> tuple[tuple[str, ...], list[str]]:
    """Options written "A. text" -> their texts and letters (in order)."""
    texts, letters = [], []
    for line in lines:
        m = _LETTERED.match(line)
        if not m:
            raise ValueError(f"an option is written 'A. text', got {line!r}")
        letters.append(m.group(1))
        texts.append(m.group(2))
    return tuple(texts), letters


def _pick(options: tuple[str, ...], letters: list[str], answer: str) -> str:
    """The option an answer names: by its letter ("B", "B.", "B. text") or by its text."""
    answer = answer.strip()
    m = re.match(r"^\(?([A-Z])(?:[.):]|$)", answer)
    if m and m.group(1) in letters:
        return options[letters.index(m.group(1))]
    if answer in options:
        return answer
    raise ValueError(f"the answer {answer!r} names none of the options {letters}")


def _llava(record: dict, base: Path) -> list[VideoQA]:
    video = _video(record["video"], base)
    turns = record["conversations"]
    rid = str(record.get("id", video.stem))
    out = []
    for i in range(0, len(turns) - 1, 2):
        human, gpt = turns[i], turns[i + 1]
        if human["from"] != "human" or gpt["from"] != "gpt":
            raise ValueError(f"turn {i} is not a human turn followed by a gpt turn")
        text = _text(human["value"], "a question").replace("<image>", "").replace("<video>", "").strip()
        answer = _text(gpt["value"], "an answer")
        lines = text.splitlines()
        lettered = [line for line in lines if _LETTERED.match(line)]
        options: tuple[str, ...] = ()
        if len(lettered) >= 2:  # multiple choice: the question without its option lines
            options, letters = split_options(lettered)
            answer = _pick(options, letters, answer)
            text = "\n".join(line for line in lines if line not in lettered and line.strip() != "Options:").strip()
        out.append(VideoQA(f"{rid}#{i // 2}", video, text, answer, options, None, str(record.get("data_source", ""))))
    if not out:
        raise ValueError("no human/gpt turn pair")
    return out


OVO_FORWARD = ("REC", "SSR", "CRR")
OVO_SPLITS = dict.fromkeys(("EPM", "ASI", "HLD"), "backward") | dict.fromkeys(
    ("STU", "OJR", "ATR", "ACR", "OCR", "FPD"), "realtime") | dict.fromkeys(OVO_FORWARD, "forward")


def _ovo(record: dict, base: Path) -> list[VideoQA]:
    video, task, rid = _video(record["video"], base), _text(record["task"], "task"), str(record["id"])
    if task not in OVO_FORWARD:
        options = tuple(_text(o, "an option") for o in record["options"])
        gt = record["gt"]
        if isinstance(gt, bool) or not isinstance(gt, int) or not 0 <= gt < len(options):
            raise ValueError(f"gt must index the {len(options)} options, got {gt!r}")
        return [VideoQA(rid, video, _text(record["question"], "question"), options[gt], options,
                        _seconds(record["realtime"]), task, OVO_SPLITS.get(task, ""))]
    out = []
    for i, point in enumerate(record["test_info"]):
        t = _seconds(point["realtime"])
        if task == "REC":
            q, answer, options = f"How many times did they {_text(record['activity'], 'activity')}?", str(int(point["count"])), ()
        else:
            q = (f"Is the person now doing this step: {_text(point['step'], 'step')}?" if task == "SSR" else
                 f"Can this be answered from what has been shown so far: {_text(record['question'], 'question')}?")
            answer, options = ("Yes" if int(point["type"]) == 1 else "No"), ("Yes", "No")
        out.append(VideoQA(f"{rid}#{i}", video, q, answer, options, t, task, "forward"))
    return out


def _streamingbench(record: dict, base: Path) -> list[VideoQA]:
    video = _video(record["video_path"], base)
    out = []
    for i, q in enumerate(record["questions"]):
        options, letters = split_options(list(q["options"]))
        out.append(VideoQA(str(q.get("id", f"{video.stem}#{i}")), video, _text(q["question"], "question"),
                           _pick(options, letters, _text(q["answer"], "answer")), options,
                           _seconds(q["time_stamp"]), _text(q["task_type"], "task_type")))
    return out


_PARSERS = {"llava": _llava, "ovo": _ovo, "streamingbench": _streamingbench}


def decode_frames(path: str | Path, fps: float, until: float | None = None,
                  since: float = 0.0) -> Iterator[tuple[float, np.ndarray]]:
    """The video's frames sampled at `fps`, as (seconds from the first frame, uint8 RGB [H, W, 3]): for each
    sampling time k / fps the first decoded frame at or after it, from `since` (seeking to the keyframe before
    it, so a clip late in a long video costs only its own decoding) up to `until` (inclusive). FFmpeg's errors
    become `VideoError`, also midway (frames before it were already yielded)."""
    if not fps > 0 or not since >= 0:
        raise ValueError(f"fps must be positive and since >= 0, got {fps!r}, {since!r}")
    step, eps = 1.0 / fps, 1e-6
    try:
        container = av.open(str(path))
    except (av.FFmpegError, OSError) as e:
        raise VideoError(f"{path}: cannot open: {e}") from e
    try:
        if not container.streams.video:
            raise VideoError(f"{path}: no video stream")
        stream = container.streams.video[0]
        first, due = None, math.ceil(since * fps - 1e-3) * step
        if since > 0:  # times count from the stream's start, which a seek does not decode
            first = float(stream.start_time * stream.time_base) if stream.start_time is not None else 0.0
            container.seek(round((first + since) / stream.time_base), stream=stream, backward=True)
        for frame in container.decode(stream):
            if frame.time is None:
                continue
            first = frame.time if first is None else first
            t = frame.time - first
            if until is not None and t > until + eps:
                break
            if t + eps >= due:
                yield t, frame.to_ndarray(format="rgb24")
                while due <= t + eps:  # a frame stands for every sampling time up to it
                    due += step
        if first is None:
            raise VideoError(f"{path}: no frames")
    except (av.FFmpegError, OSError, ValueError) as e:
        raise VideoError(f"{path}: {e}") from e
    finally:
        container.close()

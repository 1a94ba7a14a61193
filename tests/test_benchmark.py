"""The benchmark harness (`cubestream eval --dataset`): live replay, questions at their times, scoring."""
import copy
import json
from types import SimpleNamespace

import pytest
import torch

from actors.benchmark import Method, is_right, replay, table
from actors.cli import main
from configs import load_config
from models.cube_encoder import CubeEncoder
from stream.datasets import VideoQA, load_dataset
from stream.synth import SynthWorld
from stream.synth_export import write_video

OPTIONS = ["red", "green", "blue", "white"]
TIMES = [1.0, 2.5, 3.0, 4.5, 5.0, 6.5, 7.0, 7.5]  # within the 8-s videos; the truth cycles through the options


class Oracle:
    """Answers with the truth, looked up by the question's text."""

    def __init__(self, truths):
        self.truths = truths

    def answer(self, entries, question, options=None):
        return SimpleNamespace(text=self.truths[question])


class FirstOption:
    def answer(self, entries, question, options=None):
        return SimpleNamespace(text=options[0])


class Recorder:
    """Records the newest memory time each question was answered over."""

    def __init__(self):
        self.seen = {}

    def answer(self, entries, question, options=None):
        self.seen[question] = max((e.end for e in entries), default=None)
        return SimpleNamespace(text="")


@pytest.fixture(scope="module")
def cfg():
    return load_config(overrides={"temporal": {"prime_frames": 0}})


@pytest.fixture(scope="module")
def encoders(cfg):
    torch.manual_seed(0)
    adaptive = CubeEncoder(cfg).eval()
    per_frame_cfg = copy.deepcopy(cfg)
    per_frame_cfg.cubing.min_len = per_frame_cfg.cubing.max_len = 1
    per_frame_cfg.cubing.event_max_len = None
    per_frame = CubeEncoder(per_frame_cfg).eval()
    per_frame.load_state_dict(adaptive.state_dict())
    return adaptive, per_frame


@pytest.fixture(scope="module")
def fixtures(tmp_path_factory):
    """The same 16 questions (two videos, 8 each, known answers) in each format."""
    root = tmp_path_factory.mktemp("bench")
    for seed in (0, 1):
        write_video(SynthWorld(seed=seed), root / "videos" / f"v{seed}.mp4", seconds=8.0, fps=2.0)
    qs = [(f"v{v}", f"Question {v} {i}?", TIMES[i], (v * 8 + i) % 4) for v in (0, 1) for i in range(8)]
    ovo = [{"id": f"{v}-{i}", "video": f"videos/{v}.mp4", "task": "STU" if i % 2 else "EPM", "question": q,
            "options": OPTIONS, "realtime": t, "gt": gt} for i, (v, q, t, gt) in enumerate(qs)]
    sb = [{"video_path": f"videos/{v}.mp4", "questions": [
        {"task_type": "odd" if i % 2 else "even", "question": q, "time_stamp": f"00:00:{t:04.1f}",
         "options": [f"{chr(65 + j)}. {o}" for j, o in enumerate(OPTIONS)], "answer": chr(65 + gt)}
        for i, (vv, q, t, gt) in enumerate(qs) if vv == v]} for v in ("v0", "v1")]
    llava = [{"id": v, "video": f"videos/{v}.mp4", "data_source": "fixture", "conversations": [
        turn for vv, q, _, gt in qs if vv == v for turn in (
            {"from": "human", "value": "<image>\n" + q + "\n" + "\n".join(f"{chr(65 + j)}. {o}" for j, o in enumerate(OPTIONS))},
            {"from": "gpt", "value": chr(65 + gt)})]} for v in ("v0", "v1")]
    for name, records in (("ovo", ovo), ("streamingbench", sb), ("llava", llava)):
        (root / name).mkdir()
        (root / name / "videos").symlink_to(root / "videos")
        (root / name / f"{name}.json").write_text(json.dumps(records))
    return root, {q: OPTIONS[gt] for _, q, _, gt in qs}


@pytest.mark.parametrize("fmt", ["ovo", "streamingbench", "llava"])
def test_truth_scores_all_and_a_fixed_option_scores_chance(cfg, encoders, fixtures, fmt):
    root, truths = fixtures
    ds = load_dataset(root / fmt, fmt)
    assert len(ds.items) == 16 and not ds.problems
    res = replay(ds, [Method("oracle", encoders[0], Oracle(truths)), Method("first", encoders[0], FirstOption())],
                 cfg, log=lambda *_: None)
    oracle, first = res["methods"]["oracle"], res["methods"]["first"]
    assert oracle["accuracy"] == 1.0 and oracle["questions"] == 16
    assert first["accuracy"] == 0.25 == first["chance"]  # the truth is each option equally often
    if fmt == "ovo":  # OVO-Bench's tasks, and its splits
        assert oracle["by_task"] == {"EPM": 1.0, "STU": 1.0} and oracle["by_split"] == {"backward": 1.0, "realtime": 1.0}
    if fmt == "streamingbench":
        assert oracle["by_task"] == {"even": 1.0, "odd": 1.0} and oracle["by_split"] == {}
    assert "| oracle | 100.0% | 25.0% | 16 | 0 |" in table(res)


def test_each_question_is_asked_at_its_time_over_the_frames_before_it(cfg, encoders, fixtures):
    root, _ = fixtures
    ds = load_dataset(root / "ovo", "ovo")
    rec_adaptive, rec_frames = Recorder(), Recorder()
    res = replay(ds, [Method("adaptive", encoders[0], rec_adaptive), Method("frames", encoders[1], rec_frames)],
                 cfg, fps=2.0, log=lambda *_: None)
    asked = {q.question: q.asked_at for q in ds.items}
    for q, t in asked.items():
        # never a frame after the question's time ...
        assert rec_adaptive.seen[q] is None or rec_adaptive.seen[q] <= t
        # ... and not asked at the video's end: one-frame cubes close a frame later, so the memory reaches
        # the frame before the newest at or before t
        assert t - 1.0 <= rec_frames.seen[q] <= t
    for a in res["answers"]:
        assert a["seen_until"] is None or a["seen_until"] <= a["asked_at"]


def test_newest_n_and_a_corrupt_video(cfg, encoders, fixtures, tmp_path):
    root, truths = fixtures
    ds = load_dataset(root / "ovo", "ovo")
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video at all" * 100)
    ds.items.append(VideoQA("bad", bad, "Question 0 0?", "red", tuple(OPTIONS), 2.0, "even"))
    rec = Recorder()
    res = replay(ds, [Method("newest2", encoders[1], rec, newest=2)], cfg, log=lambda *_: None)
    assert res["methods"]["newest2"]["questions"] == 16  # the bad video's question left out ...
    assert [p["where"] for p in res["problems"]] == [str(bad)]  # ... and reported
    assert all(a["entries"] <= 2 for a in res["answers"])


def test_is_right():
    q = VideoQA("1", None, "q", "blue", ("red", "blue"), 1.0, "t")
    assert is_right(q, "blue") and is_right(q, "B") and is_right(q, "B.") and is_right(q, "B. blue")
    assert not is_right(q, "A") and not is_right(q, "red") and not is_right(q, "")
    free = VideoQA("2", None, "q", "A red square enters.", (), None, "t")
    assert is_right(free, "a red  square enters") and not is_right(free, "a red square")


def test_cli_eval_dataset_with_the_default_profile(tmp_path, capsys):
    data = tmp_path / "ds"
    assert main(["export-synth", "--out", str(data), "--format", "streamingbench", "--videos", "1",
                 "--seconds", "30", "--questions", "3", "--first-seed", "11000"]) == 0
    out = tmp_path / "r.json"
    assert main(["eval", "--dataset", str(data), "--format", "streamingbench", "--json", str(out)]) == 0
    res = json.loads(out.read_text())
    assert set(res["methods"]) == {"adaptive", "recent-frames"}
    n = len(load_dataset(data, "streamingbench").items)
    assert all(r["questions"] == n for r in res["methods"].values()) and n >= 2
    assert "| adaptive |" in capsys.readouterr().out

"""Video QA datasets: the three formats read into the same records, videos decoded at the sampler's rate,
bad entries reported and skipped; `cubestream export-synth` writes datasets these readers read back."""
import json

import numpy as np
import pytest

from actors.cli import main
from stream.datasets import Problem, VideoError, decode_frames, load_dataset
from stream.synth import SynthWorld
from stream.synth_export import write_video


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    path = tmp_path_factory.mktemp("v") / "videos" / "w.mp4"
    write_video(SynthWorld(seed=3), path, seconds=10.0, fps=4.0)  # 40 frames, 0.25 s apart
    return path


def test_decode_samples_at_the_rate_and_stops_at_until(video):
    frames = list(decode_frames(video, 2.0))
    assert [t for t, _ in frames] == pytest.approx([i / 2 for i in range(20)])
    assert frames[0][1].dtype == np.uint8 and frames[0][1].shape == (64, 64, 3)
    world = SynthWorld(seed=3)  # the frame at t is the world's frame at t (through H.264)
    assert np.abs(frames[9][1].astype(int) - world.frame_at(4.5)).mean() < 8
    assert [t for t, _ in decode_frames(video, 1.0, until=3.0)] == pytest.approx([0, 1, 2, 3])
    # from a later time: the same frames and times as decoding from the start (a seek, then decoding)
    late = list(decode_frames(video, 2.0, since=3.2, until=6.0))
    assert [t for t, _ in late] == pytest.approx([3.5, 4.0, 4.5, 5.0, 5.5, 6.0])
    assert all(np.array_equal(f, frames[int(t * 2)][1]) for t, f in late)
    # a rate above the video's: each decoded frame once
    assert len(list(decode_frames(video, 10.0))) == 40


def test_a_late_clip_seeks_to_the_keyframe_before_it(tmp_path):
    import av

    path = tmp_path / "gop.mp4"  # a keyframe every 4 frames, so the seek lands mid-file
    world = SynthWorld(seed=4)
    with av.open(str(path), "w") as out:
        s = out.add_stream("libx264", rate=4)
        s.width = s.height = 64
        s.pix_fmt = "yuv420p"
        s.options = {"crf": "12", "g": "4", "keyint_min": "4", "sc_threshold": "0"}
        for i in range(80):
            out.mux(s.encode(av.VideoFrame.from_ndarray(world.frame_at(i / 4), format="rgb24")))
        out.mux(s.encode())
    whole = dict(decode_frames(path, 2.0))
    late = list(decode_frames(path, 2.0, since=13.1, until=15.0))
    assert [t for t, _ in late] == pytest.approx([13.5, 14.0, 14.5, 15.0])
    assert all(np.array_equal(f, whole[t]) for t, f in late)


def test_a_corrupt_or_missing_video_is_a_video_error(tmp_path, video):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 20)
    with pytest.raises(VideoError):
        list(decode_frames(bad, 2.0))
    with pytest.raises(VideoError):
        list(decode_frames(tmp_path / "nope.mp4", 2.0))
    cut = tmp_path / "cut.mp4"  # a truncated file: whatever decodes comes out, then an error or the end
    cut.write_bytes(video.read_bytes()[: video.stat().st_size // 3])
    try:
        got = list(decode_frames(cut, 2.0))
        assert len(got) < 20
    except VideoError:
        pass


def test_ovo_records(tmp_path, video):
    (tmp_path / "videos").mkdir()
    (tmp_path / "videos" / "w.mp4").write_bytes(video.read_bytes())
    records = [
        {"id": 1, "video": "videos/w.mp4", "task": "EPM", "question": "What was red?", "options": ["a", "b", "c"],
         "realtime": 4.5, "gt": 2},
        {"id": 2, "video": "videos/w.mp4", "task": "REC", "activity": "jump", "test_info": [
            {"realtime": 3, "count": 1}, {"realtime": 7, "count": 2}]},
        {"id": 3, "video": "videos/w.mp4", "task": "SSR", "test_info": [{"realtime": 5, "step": "cut it", "type": 1}]},
        {"id": 4, "video": "videos/gone.mp4", "task": "EPM", "question": "q", "options": ["a", "b"], "realtime": 1, "gt": 0},
        {"id": 5, "video": "videos/w.mp4", "task": "EPM", "question": "q", "options": ["a", "b"], "realtime": 1, "gt": 7},
        {"id": 6, "video": "videos/w.mp4", "task": "STU"},
    ]
    (tmp_path / "ovo.json").write_text(json.dumps(records))
    ds = load_dataset(tmp_path, "ovo")
    assert [(q.id, q.answer, q.asked_at, q.task) for q in ds.items] == [
        ("1", "c", 4.5, "EPM"), ("2#0", "1", 3.0, "REC"), ("2#1", "2", 7.0, "REC"), ("3#0", "Yes", 5.0, "SSR")]
    assert ds.items[0].options == ("a", "b", "c") and ds.items[3].options == ("Yes", "No")
    assert ds.items[1].question == "How many times did they jump?"
    assert [q.split for q in ds.items] == ["backward", "forward", "forward", "forward"]
    where = [p.where for p in ds.problems]
    assert len(ds.problems) == 3 and all(w.startswith(str(tmp_path / "ovo.json")) for w in where)
    assert "missing" in ds.problems[0].reason and "gt" in ds.problems[1].reason and "KeyError" in ds.problems[2].reason


def test_streamingbench_records(tmp_path, video):
    records = [{"video_path": str(video), "questions": [
        {"task_type": "Object Perception", "question": "What is there?", "time_stamp": "00:00:07",
         "options": ["A. a cat", "B. a dog"], "answer": "B"},
        {"task_type": "Counting", "question": "How many?", "time_stamp": "00:01:02.5",
         "options": ["A.one", "B.two", "(C) three"], "answer": "C. three"}]},
        {"video_path": str(video), "questions": [{"task_type": "x", "question": "q", "time_stamp": "00:00:01",
                                                   "options": ["A. a", "B. b"], "answer": "E"}]}]
    (tmp_path / "sb.json").write_text(json.dumps(records))
    ds = load_dataset(tmp_path / "sb.json", "streamingbench")
    assert [(q.answer, q.options, q.asked_at, q.task) for q in ds.items] == [
        ("a dog", ("a cat", "a dog"), 7.0, "Object Perception"), ("three", ("one", "two", "three"), 62.5, "Counting")]
    assert len(ds.problems) == 1 and "names none of the options" in ds.problems[0].reason


def test_llava_jsonl_with_a_malformed_line(tmp_path, video):
    good = {"id": "v1", "video": str(video), "conversations": [
        {"from": "human", "value": "<image>\nWhat happens?"}, {"from": "gpt", "value": "A red square enters."},
        {"from": "human", "value": "Which colour?\nA. red\nB. blue\nAnswer with the letter."},
        {"from": "gpt", "value": "B."}]}
    lines = [json.dumps(good), "{not json", json.dumps({"id": "v2", "video": str(video)}), ""]
    (tmp_path / "train.jsonl").write_text("\n".join(lines))
    ds = load_dataset(tmp_path, "llava")
    assert [(q.question, q.answer, q.options, q.asked_at) for q in ds.items] == [
        ("What happens?", "A red square enters.", (), None),
        ("Which colour?\nAnswer with the letter.", "blue", ("red", "blue"), None)]
    assert ds.problems[0] == Problem(f"{tmp_path / 'train.jsonl'}:2", ds.problems[0].reason)
    assert "malformed JSON" in ds.problems[0].reason and ds.problems[1].where.endswith(":3")


def test_unknown_format_and_empty_folder(tmp_path):
    with pytest.raises(ValueError, match="unknown dataset format"):
        load_dataset(tmp_path, "csv")
    with pytest.raises(FileNotFoundError):
        load_dataset(tmp_path, "ovo")
    (tmp_path / "x.json").write_text("{broken")
    assert "malformed JSON" in load_dataset(tmp_path, "ovo").problems[0].reason


@pytest.mark.parametrize("fmt", ["ovo", "streamingbench", "llava"])
def test_export_synth_round_trip(tmp_path, fmt, capsys):
    assert main(["export-synth", "--out", str(tmp_path), "--format", fmt, "--videos", "2", "--seconds", "40",
                 "--questions", "4", "--first-seed", "7"]) == 0
    ds = load_dataset(tmp_path, fmt)
    assert not ds.problems and len(ds.items) >= 4
    assert {q.video.name for q in ds.items} == {"synth_7.mp4", "synth_8.mp4"}
    for q in ds.items:
        if fmt == "llava":
            assert q.asked_at is None and not q.options
        else:  # asked within the video, the truth among the options
            assert 0 < q.asked_at <= 39.5 and q.answer in q.options and len(q.options) >= 2
    assert len(list(decode_frames(ds.items[0].video, 2.0))) == 80

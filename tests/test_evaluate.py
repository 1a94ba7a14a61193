"""Evaluation's numbers are computed from what the model did, checked here against independent counts."""
import copy
import math
import random

import pytest
import torch

from configs import load_config
from models import CubeEncoder, StreamEncoder
from models.synthetic.evaluate import evaluate, match_boundaries, stream_world, table
from models.llm import CubeLLM, build_tokenizer
from models.synthetic.clips import tokenizer_corpus
from stream.questions import make_questions
from stream.synth import SynthWorld


def test_match_boundaries_is_one_to_one_within_tolerance():
    assert match_boundaries([1.0, 1.2, 5.0, 9.9], [1.1, 5.9, 9.0]) == 3
    assert match_boundaries([1.0, 1.2], [1.1]) == 1  # one true boundary matches once
    assert match_boundaries([3.0], [1.0]) == 0
    assert match_boundaries([], [1.0]) == 0 and match_boundaries([1.0], []) == 0


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    cfg = load_config(overrides={"llm": {"num_layers": 1}})
    return cfg, CubeEncoder(cfg).eval(), CubeLLM(cfg, tokenizer=build_tokenizer(tokenizer_corpus(cfg, 4))).eval()


def test_evaluate_counts_match_an_independent_replay(setup):
    cfg, encoder, llm = setup
    seeds, seconds = [20_001, 20_002], 25.0  # 50 frames a world
    res = evaluate(cfg, encoder, llm, seeds, seconds, questions=2, methods=("adaptive", "fixed", "uniform"), log=lambda *_: None)

    asked, texts = 0, []
    cubes_adaptive, tp, n_pred, n_true = 0, 0, 0, 0
    for seed in seeds:
        world = SynthWorld(seed=seed)
        cubes = stream_world(StreamEncoder(encoder), world, seconds)
        cubes_adaptive += len(cubes)
        pred = [c.start for prev, c in zip(cubes, cubes[1:]) if not prev.forced]
        true = world.boundary_times(0.5, seconds)
        tp, n_pred, n_true = tp + match_boundaries(pred, true), n_pred + len(pred), n_true + len(true)
        qs = make_questions(world, cubes[-1].end, random.Random(seed), n=2)
        asked, texts = asked + len(qs), texts + [(seed, q.text, q.answer) for q in qs]
    frames = len(seeds) * int(seconds * 2)
    K = cfg.resampler.num_queries

    a = res["adaptive"]
    assert a["questions"] == asked
    # every question is on record with its answer; the accuracies are those of the records
    assert [(r["world"], r["question"], r["truth"]) for r in a["answers"]] == texts
    assert a["qa"] == pytest.approx(sum(r["right"] for r in a["answers"]) / asked)
    for kind, acc in a["qa_by_kind"].items():
        of_kind = [r["right"] for r in a["answers"] if r["kind"] == kind]
        assert acc == (pytest.approx(sum(of_kind) / len(of_kind)) if of_kind else None)
    assert a["frames_per_cube"] == pytest.approx(frames / cubes_adaptive)
    assert a["tokens_per_frame"] == pytest.approx(K * cubes_adaptive / frames)
    assert a["boundary_precision"] == pytest.approx(tp / n_pred)
    assert a["boundary_recall"] == pytest.approx(tp / n_true)
    assert a["compression"] == pytest.approx(encoder.vision.grid**2 / a["tokens_per_frame"])
    # the baselines keep the adaptive run's tokens per frame: cubes of L = its mean frames a cube, rounded
    L = round(a["frames_per_cube"])
    assert res["fixed"]["frames_per_cube"] == pytest.approx(frames / (len(seeds) * math.ceil(50 / L)))
    assert res["uniform"]["tokens_per_frame"] == pytest.approx(K * len(seeds) * math.ceil(50 / L) / frames)
    assert 0.0 <= a["qa"] <= 1.0
    if a["recall@1"] is not None:  # recall over cited spans can only grow with k
        assert 0.0 <= a["recall@1"] <= a["recall@3"] <= a["recall@5"] <= 1.0
    assert "| adaptive |" in table(res)


def test_fixed_alone_cuts_cubes_of_the_trained_mean(setup):
    # without an adaptive run to match, fixed cubes take the head's trained mean, not the run-time prior
    cfg, encoder, llm = setup
    cfg = copy.deepcopy(cfg)
    cfg.cubing.target_len = 1.0005  # the shipped prior: rounded as a length it would make cubes of 1 frame
    res = evaluate(cfg, encoder, llm, [20_001], 25.0, questions=0, methods=("fixed",), log=lambda *_: None)
    L = round(cfg.cubing.trained_target_len)
    assert res["fixed"]["frames_per_cube"] == pytest.approx(50 / math.ceil(50 / L))

"""The VLM's language side as the answerer uses it: options by log-likelihood, XComp scores, selection over a
memory, and questions refused before any work."""
from __future__ import annotations

from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

from configs import load_config
from models.answerer import QuestionError
from models.vlm import VisualCube, load_vlm
from models.vlm.answerer import VLMAnswerer
from stream.cube import Cube
from stream.memory import RollingMemory
from tiny_vlm import FAMILIES

GRID = (1, 2, 2)


@pytest.fixture(scope="module", params=["qwen2_5_vl", "qwen3_vl"])
def language(request, tmp_path_factory):
    path = FAMILIES[request.param](tmp_path_factory.mktemp(request.param))
    return load_vlm(str(path), "language", dtype="float32", device="cpu")


@pytest.fixture(scope="module")
def memory(language):
    g = torch.Generator().manual_seed(0)
    m = RollingMemory("cam", 10 ** 6)
    for i in range(12):
        m.add(Cube("cam", i, 10.0 * i, 10.0 * i + 8, 4, torch.randn(4, language.token_width, generator=g), 1.0))
    return list(m)


def answerer(language, **answer):
    cfg = load_config("vlm", {"model": {"vlm": "x", "cube_grid": list(GRID)}})
    return VLMAnswerer(language, replace(cfg.answer, **answer), GRID)


def test_option_logprobs_equal_the_answers_logits(language, memory):
    prompt = language.prompt([VisualCube(e.start, e.end, e.tokens.reshape(*GRID, -1)) for e in memory[:3]], "who?")
    for option in ("a red car", "no"):
        ids = language.ids(option) + language.eos_ids[:1]
        logp = F.log_softmax(language.logits(prompt, ids[:-1]), -1)
        n = len(prompt.input_ids)
        expected = sum(logp[n - 1 + i, t] for i, t in enumerate(ids))
        got = language.option_logprobs(prompt, [option])[0]
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_attention_scores_are_the_questions_attention_to_each_cube(language, memory):
    prompt = language.prompt([VisualCube(e.start, e.end, e.tokens.reshape(*GRID, -1)) for e in memory[:5]],
                             "is anyone at the door?")
    scores = language.attention_scores(prompt)
    assert scores.shape == (5,) and bool((scores >= 0).all()) and float(scores.sum()) <= 1.0 + 1e-5
    assert language.decoder.config._attn_implementation != "eager"  # the eager pass is undone


@pytest.mark.parametrize("selection", ["attention", "key", "recent"])
def test_answer_selects_within_the_budget_and_cites_shown_cubes(language, memory, selection):
    a = answerer(language, selection=selection, context_tokens=60, max_answer_tokens=4)
    ans = a.answer(memory, "what happened at the door?")
    assert 1 <= ans.cubes_used < len(memory) and ans.cubes_considered == len(memory)
    assert ans.citations and len(ans.citations) <= 3
    assert all(any((c.start, c.end) == (e.start, e.end) for e in memory) for c in ans.citations)


def test_a_named_time_is_cited_first(language, memory):
    ans = answerer(language, context_tokens=120, newest_cubes=1).answer(memory, "what came in at t=50s?")
    assert (ans.citations[0].start, ans.citations[0].end) == (50.0, 58.0)


def test_bad_questions_are_refused_before_any_work(language, memory):
    a = answerer(language, max_question_tokens=8)
    with pytest.raises(QuestionError, match="empty"):
        a.answer(memory, "  ")
    with pytest.raises(QuestionError, match="more than the limit"):
        a.answer(memory, "describe everything that happened in the last minute at the door please")
    with pytest.raises(QuestionError, match="distinct options"):
        a.answer(memory, "who?", options=["yes"])
    with pytest.raises(ValueError, match="another model.cube_grid"):
        VLMAnswerer(language, a.cfg, (1, 3, 3)).answer(memory, "who?")

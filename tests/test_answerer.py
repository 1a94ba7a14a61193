"""The Answerer on a small untrained model: limits, selection within the budget, citations."""
import copy

import pytest
import torch

from configs import load_config
from models.answerer import Answerer, QuestionError
from models.llm import CubeLLM, build_tokenizer, detokenize
from stream.cube import Cube


@pytest.fixture(scope="module")
def llm():
    torch.manual_seed(0)
    cfg = load_config(overrides={"llm": {"num_layers": 2}})
    tok = build_tokenizer(["What colour was the object that entered at t=12s ?", "red green yes no question answer"])
    return cfg, CubeLLM(cfg, tokenizer=tok).eval()


def cubes(n, k=4, d=128, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [Cube("s", i, 5.0 * i, 5.0 * i + 4.5, 10, torch.randn(k, d, generator=g), 0.5) for i in range(n)]


def test_bad_questions_are_clear_errors(llm):
    cfg, model = llm
    a = Answerer(model, cfg.answer)
    for q in ("", "   ", None):
        with pytest.raises(QuestionError, match="empty"):
            a.answer(cubes(3), q)
    with pytest.raises(QuestionError, match="limit"):
        a.answer(cubes(3), "red " * (cfg.answer.max_question_tokens + 1))


def test_selection_fits_the_budget_keeps_the_newest_in_time_order(llm):
    cfg, model = llm
    acfg = copy.deepcopy(cfg.answer)
    acfg.context_tokens, acfg.window_cubes, acfg.newest_cubes = 120, 16, 2
    a = Answerer(model, acfg)
    mem = cubes(60)
    q = a.question_ids("What colour was the object that entered at t=12s ?")
    chosen, scores = a.select(mem, q)
    per_cube = len(model.ids("t=295s :")) + 4
    assert len(chosen) == (120 - len(q)) // per_cube
    assert chosen == sorted(chosen) and {58, 59} <= set(chosen)
    assert scores.shape == (60,)
    # apart from the newest, the chosen are the best scored
    rest = [i for i in chosen if i < 58]
    others = [i for i in range(58) if i not in chosen]
    assert min(scores[rest]) >= max(scores[others])


def test_answer_reports_citations_tokens_and_latency(llm):
    cfg, model = llm
    a = Answerer(model, cfg.answer)
    mem = cubes(8)
    ans = a.answer(mem, "What colour was the object that entered at t=12s ?")
    assert isinstance(ans.text, str)
    assert ans.citations and len(ans.citations) <= cfg.answer.citations
    spans = {(c.start, c.end) for c in mem}
    assert all((c.start, c.end) in spans for c in ans.citations)
    assert [c.score for c in ans.citations] == sorted((c.score for c in ans.citations), reverse=True)
    assert ans.tokens_used > 8 * 4 and ans.latency_s > 0 and ans.cubes_used == 8


def test_detokenize_joins_numbers_and_words():
    assert detokenize(["t", "=", "1", "2", "s"]) == "t=12s"
    assert detokenize(["red", "circle"]) == "red circle"
    assert detokenize(["7"]) == "7"

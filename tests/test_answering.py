"""AnswerWorker without Ray, on the shipped default model: what an LLM actor, or an encoder actor that answers
too (runtime.llm_actors: 0), does with a stream's memory."""
import numpy as np
import pytest
import torch

from actors.answering import AnswerWorker, load_answerer
from actors.worker import EncoderWorker, load_models
from configs import ConfigError, load_config


@pytest.fixture(scope="module")
def memories(tmp_path_factory):
    """Two streams' memory entries, written by the default model's encoder."""
    torch.set_num_threads(1)
    cfg = load_config(overrides={"runtime": {"snapshot_dir": str(tmp_path_factory.mktemp("snapshots"))},
                                 "memory": {"fsync": False}})
    encoder, llm = load_models(cfg)
    w = EncoderWorker(encoder, cfg)
    w.add_stream("a"), w.add_stream("b")
    for k in range(60):
        w.push([("a", np.full((64, 64, 3), k * 37 % 256, np.uint8), k * 0.5, 0.0),
                ("b", np.full((64, 64, 3), k * 11 % 256, np.uint8), k * 0.5, 0.0)])
    return cfg, llm, {"a": w.window("a"), "b": w.window("b")}


def test_an_encoder_that_answers_too_answers_as_an_llm_actor_does(memories):
    """The encoder's own LLM (loaded with it) and a separately loaded one give the same answers."""
    cfg, llm, mem = memories
    colocated, own = AnswerWorker(load_answerer(cfg, "cpu", llm)), AnswerWorker(load_answerer(cfg, "cpu"))
    assert len(mem["a"]) >= 3
    for question, options in (("what happened ?", None), ("what colour is the square ?", None),
                              ("is the square red ?", ["yes", "no"])):
        a, b = colocated.answer(mem["a"], question, options), own.answer(mem["a"], question, options)
        assert a.pop("latency_s") >= 0 and b.pop("latency_s") >= 0
        assert a == b and a["citations"] and a["cubes_considered"] == len(mem["a"])
    found = colocated.search(["a", "b"], "square", 4, [mem["a"], mem["b"]])["results"]
    assert found == own.search(["a", "b"], "square", 4, [mem["a"], mem["b"]])["results"]
    assert len(found) == 4 and {r["stream"] for r in found} <= {"a", "b"}
    assert [r["score"] for r in found] == sorted((r["score"] for r in found), reverse=True)


def test_a_refused_question_comes_back_as_an_error(memories):
    cfg, llm, mem = memories
    answers = AnswerWorker(load_answerer(cfg, "cpu", llm))
    assert answers.answer(mem["a"], "   ") == {"error": "the question is empty"}
    assert "options" in answers.answer(mem["a"], "is it red ?", ["yes"])["error"]
    assert answers.search(["a"], "", 3, [mem["a"]]) == {"error": "the question is empty"}


def test_llm_gpus_need_llm_actors():
    assert load_config().runtime.llm_actors == 0  # the embedded default: the encoder answers too
    with pytest.raises(ConfigError, match="llm_gpus needs runtime.llm_actors"):
        load_config(overrides={"runtime": {"llm_gpus": 0.5}})
    with pytest.raises(ConfigError, match="llm_actors must be >= 0"):
        load_config(overrides={"runtime": {"llm_actors": -1}})
    assert load_config("cluster").runtime.llm_actors == 1 and load_config("vlm").runtime.llm_actors == 1

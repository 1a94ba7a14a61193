"""The readers plug-in (models/readers.py): a profile names its class, the checkpoint loader builds it, the
Answerer asks it; without one, the shipped checkpoint loads and the LLM answers everything."""
from dataclasses import replace

import pytest
import torch

from configs import ConfigError, load_config
from models import Answerer, StreamEncoder
from models.checkpoint import load_model, save_checkpoint
from models.synthetic.evaluate import stream_world
from stream.questions import make_questions, when_questions
from stream.synth import SynthWorld
from stream.timefmt import format_time

built = []  # what FixedReaders.from_checkpoint was given, by the loader


class FixedReaders(torch.nn.Module):
    """A plug-in that reads "Is ..." questions as "yes" from the newest entry and locates every time at the
    oldest entry; it keeps one weight, saved under its own key."""

    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))

    @classmethod
    def from_checkpoint(cls, tensors, cfg, llm, path):
        built.append(sorted(k for k in tensors if k.startswith("fixed.")))
        return cls()

    def state_dict(self, *args, **kwargs):
        return {"fixed.weight": self.weight.detach()}

    def read(self, llm, cubes, question, options):
        return ("yes", [len(cubes) - 1]) if question.startswith("Is ") else None

    def locate(self, llm, cubes, question):
        return -torch.arange(len(cubes), dtype=torch.float)  # the oldest entry first


@pytest.fixture(scope="module")
def memory():
    cfg = load_config("default")
    encoder, _ = load_model(cfg)
    world = SynthWorld(seed=90_011, width=cfg.vision.image_size, height=cfg.vision.image_size)
    return world, stream_world(StreamEncoder(encoder), world, 240.0)


def test_a_profile_without_readers_answers_as_the_default_with_its_readers_switched_off(memory):
    world, cubes = memory
    cfg = load_config("default")
    plain_cfg = load_config(overrides={"llm": {"readers": None}})
    _, plain = load_model(plain_cfg)
    _, shipped = load_model(cfg)
    assert plain.readers is None and shipped.readers is not None
    off = Answerer(shipped, replace(cfg.answer, reader=False, locator=False))
    questions = make_questions(world, cubes[-1].end, 3, n=12)
    assert len(questions) >= 8
    for q in questions:
        a, b = Answerer(plain, plain_cfg.answer).answer(cubes, q.text, q.options or None), off.answer(cubes, q.text, q.options or None)
        assert (a.text, a.citations, a.tokens_used) == (b.text, b.citations, b.tokens_used), q.text


def test_the_profile_names_a_class_that_the_loader_builds_and_the_answerer_asks(memory, tmp_path):
    world, cubes = memory
    cfg = load_config(overrides={"llm": {"readers": f"{__name__}:FixedReaders"}})
    encoder, llm = load_model(cfg)
    assert isinstance(llm.readers, FixedReaders) and built[-1] == []
    save_checkpoint(tmp_path, encoder, llm)  # the plug-in's weights go in under the keys it names
    _, llm = load_model(cfg, tmp_path)
    assert built[-1] == ["fixed.weight"]
    answerer = Answerer(llm, cfg.answer)
    read = answerer.answer(cubes, "Is the red circle that entered at t=40s still there?")
    assert read.text == "yes" and [(c.start, c.end) for c in read.citations] == [(cubes[-1].start, cubes[-1].end)]
    pointed = [answerer.answer(cubes, q.text).text for q in when_questions(world, cubes[-1].end)]
    assert pointed and all(t == format_time(cubes[0].start) for t in pointed), pointed  # located at the oldest entry


def test_a_readers_setting_that_names_no_class_is_refused():
    with pytest.raises(ConfigError, match="package.module:Class"):
        load_config(overrides={"llm": {"readers": "models.synthetic.readers"}})
    with pytest.raises(ImportError, match="no.such.module:Readers"):
        load_model(load_config(overrides={"llm": {"readers": "no.such.module:Readers"}}))

"""Parity of each VLM family's split (vision side -> cubes -> language side) with the model's own forward.

A tiny random config of the real Hugging Face class is saved with `save_pretrained` and loaded by path.
With one frame per cube and no pooling, the logits of an answer over our prompt equal the model's own
forward on the same frames prepared by its own processor (fp32), and greedy generation gives the same
tokens as the model's own `generate`.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import AutoModelForImageTextToText

from models.vlm import VisualCube, load_vlm
from models.vlm.base import prompt_text
from tiny_vlm import FAMILIES, reference_processor

QUESTION = "what colour was the thing that came in at the door?"
SPANS = [(10.0, 10.0), (12.5, 12.5), (31.0, 31.0)]


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def saved(request, tmp_path_factory):
    return request.param, FAMILIES[request.param](tmp_path_factory.mktemp(request.param))


def frames(n: int, h: int = 84, w: int = 112) -> list[np.ndarray]:
    rng = np.random.default_rng(7)
    return [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for _ in range(n)]


def ours(path, images):
    vision = load_vlm(str(path), "vision", dtype="float32", device="cpu")
    language = load_vlm(str(path), "language", dtype="float32", device="cpu")
    tokens = vision.encode(images)
    cubes = [VisualCube(a, b, t[None]) for (a, b), t in zip(SPANS, tokens)]  # one frame per cube, no pooling
    return language, language.prompt(cubes, QUESTION)


def theirs(path, language, images):
    processor = reference_processor(path)
    text = language.chat(prompt_text(SPANS, QUESTION, language.image_mark))
    inputs = processor(text=[text], images=[images] if language.image_mark == "<image>" else images,
                       return_tensors="pt")
    return AutoModelForImageTextToText.from_pretrained(path, dtype=torch.float32).eval(), inputs


def test_logits_of_an_answer_equal_the_models_own(saved):
    name, path = saved
    images = frames(len(SPANS))
    language, prompt = ours(path, images)
    model, inputs = theirs(path, language, images)
    assert prompt.input_ids.tolist() == inputs["input_ids"][0].tolist()  # the processor's prompt, token for token
    answer = language.ids("a red car")
    extended = {k: torch.cat([v, torch.tensor([answer]) * (k == "input_ids")], 1)
                if k in ("input_ids", "mm_token_type_ids") else v for k, v in inputs.items() if k != "attention_mask"}
    with torch.no_grad():
        ref = model(**extended).logits[0]
    got = language.logits(prompt, answer)
    assert got.shape == ref.shape
    torch.testing.assert_close(got, ref.float(), rtol=1e-4, atol=1e-5)


def test_greedy_generation_gives_the_same_tokens(saved):
    name, path = saved
    images = frames(len(SPANS))
    language, prompt = ours(path, images)
    model, inputs = theirs(path, language, images)
    ref = model.generate(**inputs, max_new_tokens=8, do_sample=False)[0, inputs["input_ids"].shape[1]:].tolist()
    ref = [t for t in ref if t not in language.eos_ids][:8]  # generate pads/ends with eos; ours stops before it
    text, got = language.generate(prompt, 8)
    assert got == ref[:len(got)] and len(got) == len(ref)


def test_pooled_cubes_change_only_their_own_tokens(saved):
    """A cube pooled to a smaller grid takes fewer tokens; the text around it is the same, the logits before
    the first cube are unchanged (the decoder is causal), and a grid equal to the frame's is no pooling at all."""
    from models.vlm.cubes import pool_cube

    name, path = saved
    images = frames(len(SPANS))
    vision = load_vlm(str(path), "vision", dtype="float32", device="cpu")
    language = load_vlm(str(path), "language", dtype="float32", device="cpu")
    tokens = [t[None] for t in vision.encode(images)]
    full = language.prompt([VisualCube(a, b, t) for (a, b), t in zip(SPANS, tokens)], QUESTION)
    same = language.prompt([VisualCube(a, b, pool_cube(t, tuple(t.shape[:3]))) for (a, b), t in zip(SPANS, tokens)],
                           QUESTION)
    torch.testing.assert_close(language.logits(same), language.logits(full))
    pooled = language.prompt([VisualCube(a, b, pool_cube(t, (1, 1, 2))) for (a, b), t in zip(SPANS, tokens)], QUESTION)
    assert [e - s for s, e in pooled.cube_spans] == [2, 2, 2]
    image = language.image_token_id
    assert [t for t in pooled.input_ids.tolist() if t != image] == [t for t in full.input_ids.tolist() if t != image]
    first = full.cube_spans[0][0]
    torch.testing.assert_close(language.logits(pooled)[:first], language.logits(full)[:first])
    q0, q1 = pooled.question_span
    assert pooled.input_ids[q0:q1].tolist() == language.ids(QUESTION)

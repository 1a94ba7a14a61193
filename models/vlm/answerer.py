"""Answering with a pretrained VLM over a stream's memory: any question in any words.

The cubes to show are chosen over the whole memory as the trained model's are (models/answerer.py): each
scored by XComp's attention from the question's tokens in the VLM's middle layers, over local windows
of `answer.window_cubes` cubes (or by the cheap key similarity, or not at all: the newest), the best that
fit `answer.context_tokens` kept in time order with the newest always in, cubes near a time the question
names first. Each shown cube is its time span in text followed by its K tokens where the VLM expects an
image's tokens; the VLM then writes a free answer (at most `answer.max_answer_tokens` tokens), or, with
options, picks the one it finds most likely; the answer cites the time spans it rests on.
"""
from __future__ import annotations

import time
from typing import Sequence

import torch

from configs import AnswerConfig
from models.answerer import (Answer, Citation, CubeLike, check_options, named_span, priority, question_ids,
                             select_cubes)
from models.vlm.base import LanguageSide, VisualCube, span_text


class VLMAnswerer:
    def __init__(self, language: LanguageSide, cfg: AnswerConfig, grid: Sequence[int]):
        """grid: the (t, h, w) token grid every cube's K = t*h*w tokens are laid out on."""
        self.language, self.cfg, self.grid = language, cfg, tuple(grid)

    def question_ids(self, question: str) -> list[int]:
        return question_ids(self.language.ids, question, self.cfg)

    def check_options(self, options: Sequence[str]) -> list[str]:
        return check_options(self.language.ids, options, self.cfg)  # byte-level tokenizers: no unknown words

    def visual(self, cube: CubeLike) -> VisualCube:
        tokens = cube.tokens
        if tokens.shape[0] != int(torch.tensor(self.grid).prod()):
            raise ValueError(f"a memory entry has {tokens.shape[0]} tokens, not the {self.grid} grid's: "
                             "the memory was written with another model.cube_grid")
        if tokens.shape[-1] != self.language.token_width:
            raise ValueError(f"a memory entry's tokens are {tokens.shape[-1]} wide, this VLM's {self.language.token_width}: "
                             "the memory was written with another model.vlm")
        return VisualCube(cube.start, cube.end, tokens.reshape(*self.grid, tokens.shape[-1]))

    @torch.no_grad()
    def scores(self, cubes: Sequence[CubeLike], question: str) -> torch.Tensor:
        """One relevance score a cube, comparable across the whole memory."""
        if self.cfg.selection == "key":
            return self.language.key_scores(torch.stack([c.tokens for c in cubes]), question)
        if self.cfg.selection == "recent":
            return torch.zeros(len(cubes))
        w, out = self.cfg.window_cubes, []
        for i in range(0, len(cubes), w):
            window = cubes[i:i + w]
            prompt = self.language.prompt([self.visual(c) for c in window], question)
            out.append(self.language.attention_scores(prompt) * len(window))  # attention is shared within a window
        return torch.cat(out)

    def tokens_per_cube(self, cube: CubeLike) -> int:
        """A cube's cost in the prompt: its span's text, its placeholder (its K tokens and any markers)."""
        return len(self.language.ids(span_text(cube.start, cube.end))) + len(self.language.placeholder(self.grid))

    @torch.no_grad()
    def answer(self, cubes: Sequence[CubeLike], question: str, options: Sequence[str] | None = None) -> Answer:
        started = time.perf_counter()
        q_ids = self.question_ids(question)
        options = self.check_options(options) if options is not None else None
        question, cubes = question.strip(), list(cubes)
        if not cubes:
            return Answer(text="", citations=[], tokens_used=0, latency_s=time.perf_counter() - started,
                          cubes_considered=0, cubes_used=0)
        fit = max(1, (self.cfg.context_tokens - len(q_ids)) // self.tokens_per_cube(cubes[-1]))
        scores = self.scores(cubes, question)
        order = priority([(c.start, c.end) for c in cubes], scores, named_span(question))
        if self.cfg.selection == "recent":
            chosen = list(range(max(0, len(cubes) - fit), len(cubes)))
        else:
            chosen = select_cubes(order, fit, self.cfg.newest_cubes)
        prompt = self.language.prompt([self.visual(cubes[i]) for i in chosen], question)
        logprobs = None
        if options is None:
            text, generated = self.language.generate(prompt, self.cfg.max_answer_tokens)
            used = len(generated)
        else:
            logprobs = self.language.option_logprobs(prompt, options).tolist()
            text = options[max(range(len(options)), key=logprobs.__getitem__)]
            used = sum(len(self.language.ids(o)) + 1 for o in options)
        shown = set(chosen)
        best = [i for i in order if i in shown][:self.cfg.citations]
        return Answer(text=text, citations=[Citation(cubes[i].start, cubes[i].end, float(scores[i])) for i in best],
                      tokens_used=len(prompt.input_ids) + used, latency_s=time.perf_counter() - started,
                      cubes_considered=len(cubes), cubes_used=len(chosen), option_logprobs=logprobs)

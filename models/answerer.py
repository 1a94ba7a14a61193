"""Answering over a stream's memory: question-conditioned selection of cubes (XComp), then the LLM.

XComp scores clips by the attention that the question's tokens pay them in the LLM's middle layers,
computed over local windows so that the LLM's bias toward the start and end of a long prompt does not
decide. Here the units are cubes: score every cube that way (or, cheaper, by the cosine of its key to
the question), keep the best that fit the LLM's token budget plus always the newest, in time order,
and answer from them, citing the time spans used.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Protocol, Sequence

import torch
import torch.nn.functional as F

from configs import AnswerConfig
from models.llm import CubeLLM, time_text


class QuestionError(ValueError):
    """A question that cannot be asked (empty, too long); nothing was run."""


class CubeLike(Protocol):
    start: float
    end: float
    tokens: torch.Tensor  # [K, D]


@dataclass
class Citation:
    start: float
    end: float
    score: float


@dataclass
class Answer:
    text: str
    citations: list[Citation]  # highest score first
    tokens_used: int  # prompt + generated tokens
    latency_s: float
    cubes_considered: int
    cubes_used: int


class Answerer:
    def __init__(self, llm: CubeLLM, cfg: AnswerConfig):
        self.llm, self.cfg = llm.eval(), cfg

    def question_ids(self, question: str) -> list[int]:
        if not isinstance(question, str) or not question.strip():
            raise QuestionError("the question is empty")
        ids = self.llm.ids(question.strip())
        if len(ids) > self.cfg.max_question_tokens:
            raise QuestionError(f"the question has {len(ids)} tokens, more than the limit of {self.cfg.max_question_tokens}")
        return ids

    @torch.no_grad()
    def scores(self, cubes: Sequence[CubeLike], question_ids: list[int]) -> torch.Tensor:
        """One relevance score a cube, comparable across the whole memory."""
        if self.cfg.selection == "key":
            q = self.llm.embed_ids(question_ids).mean(0)
            keys = self.llm.projector(torch.stack([c.tokens for c in cubes])).mean(1)
            return F.cosine_similarity(keys, q[None], dim=-1)
        w = self.cfg.window_cubes
        out = []
        for i in range(0, len(cubes), w):
            window = cubes[i:i + w]
            p = self.llm.prompt([(c.start, c.end, c.tokens) for c in window], question_ids)
            # attention mass is shared within a window; scaling by its size keeps windows comparable
            out.append(self.llm.attention_scores(p) * len(window))
        return torch.cat(out)

    def select(self, cubes: Sequence[CubeLike], question_ids: list[int]) -> tuple[list[int], torch.Tensor]:
        """Indices of the cubes to show the LLM (time order), and every cube's score."""
        per_cube = len(self.llm.ids(time_text(cubes[-1].start))) + cubes[-1].tokens.shape[0]
        fit = max(1, (self.cfg.context_tokens - len(question_ids)) // per_cube)
        scores = self.scores(cubes, question_ids)
        if len(cubes) <= fit:
            return list(range(len(cubes))), scores
        if self.cfg.selection == "recent":  # the baseline without selection: the newest cubes that fit
            return list(range(len(cubes) - fit, len(cubes))), scores
        newest = set(range(max(0, len(cubes) - self.cfg.newest_cubes), len(cubes)))
        ranked = [i for i in torch.argsort(scores, descending=True).tolist() if i not in newest]
        return sorted(newest | set(ranked[:max(0, fit - len(newest))])), scores

    @torch.no_grad()
    def answer(self, cubes: Sequence[CubeLike], question: str) -> Answer:
        """Answer `question` from `cubes` (a stream's memory, in time order)."""
        started = time.perf_counter()
        q_ids = self.question_ids(question)
        cubes = list(cubes)
        if not cubes:
            return Answer(text="", citations=[], tokens_used=0, latency_s=time.perf_counter() - started,
                          cubes_considered=0, cubes_used=0)
        chosen, scores = self.select(cubes, q_ids)
        prompt = self.llm.prompt([(cubes[i].start, cubes[i].end, cubes[i].tokens) for i in chosen], q_ids)
        text, generated = self.llm.generate(prompt, self.cfg.max_answer_tokens)
        best = sorted(chosen, key=lambda i: -float(scores[i]))[:self.cfg.citations]
        return Answer(text=text, citations=[Citation(cubes[i].start, cubes[i].end, float(scores[i])) for i in best],
                      tokens_used=len(prompt.embeds) + generated, latency_s=time.perf_counter() - started,
                      cubes_considered=len(cubes), cubes_used=len(chosen))

"""Answering over a stream's memory: question-conditioned selection of cubes (XComp), then the LLM.

XComp scores clips by the attention that the question's tokens pay them in the LLM's middle layers,
computed over local windows so that the LLM's bias toward the start and end of a long prompt does not
decide. Here the units are cubes: score every cube that way (or by the logits of the LLM's trained
`CubePointer`, which learnt which cube a question is about; or, cheaper, by the cosine of its key to
the question), keep the best that fit the LLM's token budget plus always the newest, in time order,
and answer from them, citing the time spans used. A question may come with the options it allows
("the red circle or the blue bar?"): the answer is then the option the LLM finds most likely.

Some questions rest on entries across the whole memory, which no prompt of a few cubes shows in full. Where
the profile plugs in readers of the whole memory (`llm.readers`, models/readers.py), they answer the questions
they read from every entry, and locate the entry a pointed ("when") answer means; the LLM answers the rest.

A question that names times ("... entered at t=1234s", "between t=60s and t=120s") says where its
evidence lies better than any score: the cubes within seconds of the named span come first, and
scores order the rest. The budget is about as many cubes as the LLM was trained to read (one training clip's
worth): a small LLM does not carry what it learnt to prompts several times longer.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Protocol, Sequence

import torch
import torch.nn.functional as F

from configs import AnswerConfig
from models.llm import CubeLLM, time_text
from stream.timefmt import TIME_WORD


# A named time's neighbourhood comes first, but only so far: what "entered next after ... at t=..s" or
# "no longer there" rests on may lie minutes on, where the pointer (trained on what answers rest on) finds
# it. Nearest-first over the whole budget filled a prompt with the ±25 s around the named time.
NAMED_SLACK_S = 16.0


def named_span(question: str) -> tuple[float, float] | None:
    """The span of stream time a question names ("at t=12s", "between t=10s and t=40s"), or None."""
    times = [float(t) for t in TIME_WORD.findall(question)]
    return (min(times), max(times)) if times else None


def priority(spans: Sequence[tuple[float, float]], scores: torch.Tensor,
             named: tuple[float, float] | None = None) -> list[int]:
    """Every cube's index, most relevant first: those within NAMED_SLACK_S of the named span (if any),
    nearest first, then by score."""
    def key(i):
        (a, b) = spans[i]
        if named is None:
            return (-float(scores[i]),)
        apart = max(0.0, a - named[1], named[0] - b)  # seconds, 0 where they overlap
        return (apart > NAMED_SLACK_S, apart if apart <= NAMED_SLACK_S else 0.0, -float(scores[i]))
    return sorted(range(len(spans)), key=key)


def select_cubes(order: list[int], fit: int, newest: int) -> list[int]:
    """At most `fit` cubes in time order: the `newest`, then the first of `order` (from `priority`).

    Shared by the Answerer and by training, which shows the LLM prompts chosen this way.
    """
    n = len(order)
    if n <= fit:
        return list(range(n))
    keep = set(range(max(0, n - min(newest, fit)), n))
    return sorted(keep | set([i for i in order if i not in keep][:fit - len(keep)]))


class QuestionError(ValueError):
    """A question that cannot be asked (empty, too long, unusable options); nothing was run."""


def question_ids(ids: Callable[[str], list[int]], question: str, cfg: AnswerConfig) -> list[int]:
    """The question's token ids (`ids` tokenizes); refused if empty or longer than `max_question_tokens`."""
    if not isinstance(question, str) or not question.strip():
        raise QuestionError("the question is empty")
    out = ids(question.strip())
    if len(out) > cfg.max_question_tokens:
        raise QuestionError(f"the question has {len(out)} tokens, more than the limit of {cfg.max_question_tokens}")
    return out


def check_options(ids: Callable[[str], list[int]], options: Sequence[str], cfg: AnswerConfig,
                  unk: int | None = None) -> list[str]:
    """Options stripped; refused unless there are 2..max_options distinct ones the LLM can read (no `unk` id)
    and write (at most max_answer_tokens each)."""
    if isinstance(options, str) or not all(isinstance(o, str) and o.strip() for o in options):
        raise QuestionError("options must be a list of non-empty strings")
    options = [o.strip() for o in options]
    if not 2 <= len(options) <= cfg.max_options or len(set(options)) < len(options):
        raise QuestionError(f"give 2 to {cfg.max_options} distinct options (got {len(options)}, "
                            f"{len(options) - len(set(options))} of them repeats)")
    for o in options:
        o_ids = ids(o)
        if len(o_ids) > cfg.max_answer_tokens:
            raise QuestionError(f"the option {o!r} has {len(o_ids)} tokens, more than the limit of {cfg.max_answer_tokens}")
        if unk is not None and unk in o_ids:  # every such option would read as one and the same unknown word
            raise QuestionError(f"the option {o!r} has words the model does not know")
    return options


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
    citations: list[Citation]  # most relevant first: nearest a time the question names, then by score
    tokens_used: int  # prompt + generated tokens (with options: + every option's tokens, each read once); the
    #   question's alone where the readers answered (the LLM did not run)
    latency_s: float
    cubes_considered: int
    cubes_used: int
    option_logprobs: list[float] | None = None  # with options the LLM chose among: each one's log-likelihood, in order


class Answerer:
    def __init__(self, llm: CubeLLM, cfg: AnswerConfig):
        self.llm, self.cfg = llm.eval(), cfg

    def question_ids(self, question: str) -> list[int]:
        return question_ids(self.llm.ids, question, self.cfg)

    def check_options(self, options: Sequence[str]) -> list[str]:
        return check_options(self.llm.ids, options, self.cfg, self.llm.tokenizer.unk_token_id)

    @torch.no_grad()
    def scores(self, cubes: Sequence[CubeLike], question: str) -> torch.Tensor:
        """One relevance score a cube, comparable across the whole memory."""
        if self.cfg.selection == "key":
            q = self.llm.embed_text(question).mean(0)
            keys = self.llm.projector(torch.stack([c.tokens for c in cubes])).mean(1)
            return F.cosine_similarity(keys, q[None], dim=-1)
        w = self.cfg.window_cubes
        out = []
        for i in range(0, len(cubes), w):
            window = cubes[i:i + w]
            p = self.llm.prompt([(c.start, c.end, c.tokens) for c in window], question, now=cubes[-1].end)
            if self.cfg.selection == "pointer":  # logits trained against a fixed "none": comparable across windows
                out.append(self.llm.pointer_scores(p))
            else:  # attention mass is shared within a window; scaling by its size keeps windows comparable
                out.append(self.llm.attention_scores(p) * len(window))
        return torch.cat(out)

    @torch.no_grad()
    def locator_scores(self, cubes: Sequence[CubeLike], question: str) -> torch.Tensor | None:
        """The readers' score a cube: how well it fits as the time of the event the question asks about; None
        where the profile has no readers or they locate none."""
        return None if self.llm.readers is None else self.llm.readers.locate(self.llm, cubes, question)

    @torch.no_grad()
    def locate(self, cubes: Sequence[CubeLike], question: str) -> float | None:
        """The start of the memory entry the readers locate the asked event in; None where they locate none."""
        scores = self.locator_scores(cubes, question)
        return None if scores is None else cubes[int(scores.argmax())].start

    @torch.no_grad()
    def relevance(self, cubes: Sequence[CubeLike], question: str) -> torch.Tensor:
        """One score a cube for search: the selection's `scores`, plus the readers' log-probability (over these
        cubes) that the event asked about lies in it where they locate one (it ranks the entry of an asked event
        first far more often than either alone on the default profile's test worlds)."""
        scores = self.scores(cubes, question)
        if self.cfg.locator and (located := self.locator_scores(cubes, question)) is not None:
            scores = scores + located.log_softmax(0)
        return scores

    @torch.no_grad()
    def read(self, cubes: Sequence[CubeLike], question: str, options: list[str] | None) -> tuple[str, list[int]] | None:
        """The readers' answer over the whole memory and the cubes it rests on, for a question they read; else None
        (the LLM answers)."""
        if not self.cfg.reader or self.llm.readers is None:
            return None
        return self.llm.readers.read(self.llm, cubes, question, options)

    def select(self, cubes: Sequence[CubeLike], question: str) -> tuple[list[int], list[int], torch.Tensor]:
        """Indices of the cubes to show the LLM (time order), every cube by priority, and every cube's score."""
        q_ids = self.question_ids(question)
        per_cube = len(self.llm.ids(time_text(cubes[-1].start))) + cubes[-1].tokens.shape[0]
        fit = max(1, (self.cfg.context_tokens - len(q_ids)) // per_cube)
        scores = self.scores(cubes, question)
        order = priority([(c.start, c.end) for c in cubes], scores, named_span(question))
        if self.cfg.selection == "recent":  # the baseline without selection: the newest cubes that fit
            return list(range(max(0, len(cubes) - fit), len(cubes))), order, scores
        return select_cubes(order, fit, self.cfg.newest_cubes), order, scores

    @torch.no_grad()
    def answer(self, cubes: Sequence[CubeLike], question: str, options: Sequence[str] | None = None) -> Answer:
        """Answer `question` from `cubes` (a stream's memory, in time order): written freely, or the most
        likely of `options` where given."""
        started = time.perf_counter()
        q_ids = self.question_ids(question)  # refuses an empty or too long question, or bad options, before any work
        options = self.check_options(options) if options is not None else None
        cubes = list(cubes)
        if not cubes:
            return Answer(text="", citations=[], tokens_used=0, latency_s=time.perf_counter() - started,
                          cubes_considered=0, cubes_used=0)
        if (read := self.read(cubes, question.strip(), options)) is not None:
            text, rests_on = read
            return Answer(text=text, citations=[Citation(cubes[i].start, cubes[i].end, 1.0) for i in dict.fromkeys(rests_on)],
                          tokens_used=len(q_ids), latency_s=time.perf_counter() - started,
                          cubes_considered=len(cubes), cubes_used=len(cubes))
        chosen, order, scores = self.select(cubes, question)
        prompt = self.llm.prompt([(cubes[i].start, cubes[i].end, cubes[i].tokens) for i in chosen], question.strip(),
                                 now=cubes[-1].end)
        logprobs = None
        if options is None:
            locate = self.cfg.locator and self.llm.readers is not None
            text, generated = self.llm.generate(prompt, self.cfg.max_answer_tokens,
                                                point=(lambda: self.locate(cubes, question.strip())) if locate else None)
        else:
            logprobs = self.llm.option_logprobs(prompt, options).tolist()
            text = options[max(range(len(options)), key=logprobs.__getitem__)]
            generated = sum(len(self.llm.ids(o)) + 1 for o in options)
        shown = set(chosen)
        best = [i for i in order if i in shown][:self.cfg.citations]
        return Answer(text=text, citations=[Citation(cubes[i].start, cubes[i].end, float(scores[i])) for i in best],
                      tokens_used=len(prompt.embeds) + generated, latency_s=time.perf_counter() - started,
                      cubes_considered=len(cubes), cubes_used=len(chosen), option_logprobs=logprobs)

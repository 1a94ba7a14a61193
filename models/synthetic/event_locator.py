"""Answering "When did a red bar last leave?" from the memory's sequence of what was in view.

The prompt's `CubePointer` reads one cube at a time and does not learn to tell which object a leave was,
though the cube tokens say which objects are in view at a cube's end (docs/research-notes.md). A leave of X is X in view before
and never after; an enter, X out of view before and in view after: facts about neighbouring entries and
the rest of the memory, which no per-cube read-out sees. So the locator reads, for every memory entry and
every event key (`EVENT_KEYS`), a few numbers from a linear probe of the entries' tokens (the training-only
`CubeProbe`'s head, kept): the key's object in view before, here, after and at any later entry, its
largest later rise and drop, the key's own event logit here and later, and the entry's age. A small MLP
per kind scores them; the question's words pick the key (a linear map of their pooled input embeddings),
and the answer is the entry with the best score under that key. It reads the whole memory, not a prompt
of a few cubes: the newest evidence that X left is that it is nowhere later.

Fitted on live memories of training worlds with every other weight frozen (`fit_locator`; its own copy of
the probe is fine-tuned at a hundredth of the heads' rate), it cannot cost the other questions anything.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from models.synthetic.vocabulary import ATTRIBUTES, EVENT_KEYS
KINDS = ("enter", "leave", "change")
FEATURES = 9
LOGIT_SCALE = 5.0  # the probe's logits run to about +-10; features near unit scale
NOT_THERE = -2.0  # before the first entry and after the last: out of view (a scaled logit)


def _later_max(x: torch.Tensor) -> torch.Tensor:  # [N, E] -> the max over entries j > i; NOT_THERE past the end
    after = torch.flip(torch.cummax(torch.flip(x, [0]), 0).values, [0])
    return torch.cat([after[1:], torch.full_like(x[:1], NOT_THERE)])


class EventLocator(nn.Module):
    def __init__(self, token_dim: int, width: int, hidden: int = 32):
        super().__init__()
        self.probe = nn.Linear(token_dim, len(ATTRIBUTES) + len(EVENT_KEYS))  # as CubeProbe.head: max over K tokens
        self.question = nn.Linear(width, len(EVENT_KEYS))
        self.score = nn.ModuleList([nn.Sequential(nn.Linear(FEATURES, hidden), nn.GELU(), nn.Linear(hidden, hidden),
                                                  nn.GELU(), nn.Linear(hidden, 1)) for _ in KINDS])
        self.register_buffer("kind_of_key", torch.tensor([KINDS.index(k[0]) for k in EVENT_KEYS]), persistent=False)
        # a key's object: enter/leave read their (colour, shape); a change to colour c reads any object of colour c
        pick = torch.zeros(len(EVENT_KEYS), len(ATTRIBUTES), dtype=torch.bool)
        for i, k in enumerate(EVENT_KEYS):
            for j, (c, s) in enumerate(ATTRIBUTES):
                pick[i, j] = (c, s) == k[1:] if k[0] != "change" else c == k[1]
        self.register_buffer("object_of_key", pick, persistent=False)

    def features(self, tokens: torch.Tensor, ages: torch.Tensor) -> torch.Tensor:
        """tokens [N, K, D] of a memory's entries in time order, ages [N] (s) -> [N, E, FEATURES]."""
        logits = self.probe(tokens).amax(1) / LOGIT_SCALE
        attrs, events = logits[:, :len(ATTRIBUTES)], logits[:, len(ATTRIBUTES):]
        x = attrs[:, None, :].masked_fill(~self.object_of_key, -torch.inf).amax(-1)  # [N, E]: the key's object in view
        pad = torch.full_like(x[:1], NOT_THERE)
        before, after = torch.cat([pad, x[:-1]]), torch.cat([x[1:], pad])
        age = (torch.log1p(ages.clamp(min=0)) / LOGIT_SCALE)[:, None].expand_as(x)
        return torch.stack([before, x, after, _later_max(x), _later_max(x - before), _later_max(before - x),
                            events, _later_max(events), age], -1)

    def key_logits(self, question: torch.Tensor) -> torch.Tensor:  # question's input embeddings [L, H] -> [E]
        # at unit RMS: the pooled word embeddings of a tiny LM have norm ~0.6, too small for a linear map to
        # name the key reliably
        pooled = question.mean(0)
        return self.question(F.normalize(pooled, dim=0) * pooled.shape[0] ** 0.5)

    def entry_scores(self, feats: torch.Tensor) -> torch.Tensor:  # [N, E, FEATURES] -> [N, E]
        out = torch.stack([mlp(feats).squeeze(-1) for mlp in self.score], -1)  # [N, E, kinds]
        return out.gather(-1, self.kind_of_key.expand(len(feats), -1)[..., None]).squeeze(-1)

    def forward(self, tokens: torch.Tensor, ages: torch.Tensor, question: torch.Tensor) -> torch.Tensor:
        """One score a memory entry: how well it fits as the time of the event the question asks about."""
        return self.entry_scores(self.features(tokens, ages)) @ self.key_logits(question).softmax(0)


class LocatorEnsemble(nn.Module):
    """Locators fitted from different seeds, an entry's score the mean of their log-softmax over entries: one
    fit's "when" answers vary by seed as much as by most changes, and the mean of three beats each of them."""

    def __init__(self, fits: list[EventLocator]):
        super().__init__()
        self.fits = nn.ModuleList(fits)

    def forward(self, tokens: torch.Tensor, ages: torch.Tensor, question: torch.Tensor) -> torch.Tensor:
        return torch.stack([f(tokens, ages, question).log_softmax(0) for f in self.fits]).mean(0)

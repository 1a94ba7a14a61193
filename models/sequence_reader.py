"""Answering "what entered next", "which entered first" and "is it still there?" from the memory's sequence.

These questions rest on the order of entries across a memory of minutes: the next object to enter after a
named one may come three quiet minutes later, and whether an object is still there is its absence from
every entry since it was seen. The LLM reads a prompt of a few cubes and got them right 3 of 19, 18 of 28
and 35 of 46 times on test worlds 11000-11011 (session 19). Like the `EventLocator`, this reads every
entry through the kept linear probe (`CubeProbe.head`: each (colour, shape) pair in view at an entry's end,
and which events begin in it), as features an entry beside its neighbours, scored by small MLPs:

- "which entered first after t: the a or the b?": the chance that each pair enters at each entry after t
  (`enter_chances`), P(a's first enter comes before b's) from the two first-enter distributions (ties half);
- "what entered next after the a that entered at t?" (`next_after`): the chance that anything enters at
  each entry after t and which pair it is (a's own enter masked), the first such entry's pair;
- "is the a that entered at t still there?" (`still_there`): whether the pair seen entering at t is in view at the end, has dropped out since,
  or another colour of its shape has come in (a colour change).

An object shows in the entry that starts just after its enter begins (the boundary head closes a cube at
the enter), so the entry holding a named time t is the one before the object is seen. Which reading a
question asks for comes from a linear map of its words' mean input embedding (as the locator's key), the
pair it names from a colour score plus a shape score, each a soft maximum over its words (on the names in
"next after" / "still there" questions and "first" options of test worlds 11000-11023: 234 of 234 right;
a 30-way map of the mean word 62%, a hard maximum 70%; the mean with the time embedding of "t=...s" added
named 5 of 47 "next after" pairs); the named time from its "t=...s". Fitted on live memories of training worlds
with every other weight frozen (`fit_reader`).
"""
from __future__ import annotations

import bisect

import torch
import torch.nn as nn
import torch.nn.functional as F

from models.event_locator import ATTRIBUTES, EVENT_KEYS, LOGIT_SCALE, NOT_THERE
from stream.synth import COLOURS, SHAPES

READINGS = ("none", "first_of", "next_after", "still_there")  # "none": a question for the LLM
PRESENT_FEATURES = 9
ENTER_FEATURES = 5
_LEAVES = [EVENT_KEYS.index(("leave", c, s)) for c, s in ATTRIBUTES]
_ENTERS = [EVENT_KEYS.index(("enter", c, s)) for c, s in ATTRIBUTES]
_CHANGES = [EVENT_KEYS.index(("change", c)) for c in COLOURS]


def _mlp(n_in: int, hidden: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(n_in, hidden), nn.GELU(), nn.Linear(hidden, 1))


def survival(p: torch.Tensor) -> torch.Tensor:
    """[M, ...] chances of an event at each entry -> the chance that none came at an earlier entry."""
    return torch.cat([torch.ones_like(p[:1]), torch.cumprod(1 - p, 0)[:-1]])


def first_logit(p: torch.Tensor, a: int, b: int) -> torch.Tensor:
    """[M, A] enter chances -> log P(a enters first) - log P(b enters first); a tie at one entry counts half."""
    sa, sb = survival(p[:, a]), survival(p[:, b])
    fa, fb = p[:, a] * sa, p[:, b] * sb
    return torch.log((fa * (sb - 0.5 * fb)).sum() + 1e-6) - torch.log((fb * (sa - 0.5 * fa)).sum() + 1e-6)


def entry_at(starts: list[float], t: float) -> int:
    """The entry holding time t: the last to start at or before it (the first, for t before them all)."""
    return max(0, bisect.bisect_right(starts, t) - 1)


class SequenceReader(nn.Module):
    def __init__(self, token_dim: int, width: int, hidden: int = 16):
        super().__init__()
        self.probe = nn.Linear(token_dim, len(ATTRIBUTES) + len(EVENT_KEYS))  # as CubeProbe.head: max over K tokens
        self.reading = nn.Linear(width, len(READINGS))
        # the (colour, shape) a question or an option names: a colour and a shape score of every word
        self.colour, self.shape = nn.Linear(width, len(COLOURS)), nn.Linear(width, len(SHAPES))
        self.first = _mlp(ENTER_FEATURES, hidden)
        self.next_which = _mlp(ENTER_FEATURES, hidden)
        self.next_any = _mlp(2 * ENTER_FEATURES + 1, hidden)
        self.present = _mlp(PRESENT_FEATURES, hidden)
        same_shape = torch.tensor([[s == s2 for _, s2 in ATTRIBUTES] for _, s in ATTRIBUTES])
        self.register_buffer("same_shape", same_shape, persistent=False)
        with torch.no_grad():  # most entries start no enter: begin there, not at even odds
            self.first[-1].bias.fill_(-4.0), self.next_any[-1].bias.fill_(-2.0)

    # ---- what the entries show ----

    def logits(self, tokens: torch.Tensor) -> torch.Tensor:  # [N, K, D] -> [N, A + E], near unit scale
        return self.probe(tokens).amax(1) / LOGIT_SCALE

    @staticmethod
    def enter_features(logits: torch.Tensor) -> torch.Tensor:
        """[N, A + E] -> [N, A, 5]: each pair's enter logit, its rise into view, in view before, here, and
        after against before."""
        x, e = logits[:, :len(ATTRIBUTES)], logits[:, len(ATTRIBUTES):][:, _ENTERS]
        pad = torch.full_like(x[:1], NOT_THERE)
        before, after = torch.cat([pad, x[:-1]]), torch.cat([x[1:], pad])
        return torch.stack([e, x - before, before, x, after - before], -1)

    # ---- what the question asks ----

    @staticmethod
    def _unit(embeds: torch.Tensor) -> torch.Tensor:  # [L, H] at unit RMS: a tiny LM's word embeddings have norm ~0.6
        return F.normalize(embeds, dim=-1) * embeds.shape[-1] ** 0.5

    def reading_logits(self, question: torch.Tensor) -> torch.Tensor:  # words' embeddings [L, H] -> [len(READINGS)]
        return self.reading(self._unit(question.mean(0)))

    def pair_logits(self, text: torch.Tensor) -> torch.Tensor:  # words' embeddings [L, H] -> [A]
        words = self._unit(text)
        return (self.colour(words).logsumexp(0)[:, None] + self.shape(words).logsumexp(0)[None, :]).flatten()

    # ---- the readings: from the entry holding the named time on ----

    def enter_chances(self, logits: torch.Tensor, j: int) -> torch.Tensor:
        """[M, A]: the chance that each pair enters at each entry from j on (for `first_logit`)."""
        return torch.sigmoid(self.first(self.enter_features(logits)[j:]).squeeze(-1))

    def next_after(self, logits: torch.Tensor, j: int, a: int) -> torch.Tensor:
        """[M, A]: the chance that the next enter after pair a's (seen in entry j or j + 1) is each pair's, at each
        entry from j on; summed over entries, which pair entered next."""
        f = self.enter_features(logits)[j:].clone()
        f[:2, a] = torch.tensor([NOT_THERE, NOT_THERE / 2, 0.0, NOT_THERE, NOT_THERE / 2])  # its own enter is not next
        which = self.next_which(f).squeeze(-1)  # [M, A]
        entry = torch.cat([f.amax(1), torch.logsumexp(3 * f, 1) / 3, which.logsumexp(1, keepdim=True)], -1)
        p_any = torch.sigmoid(self.next_any(entry).squeeze(-1))  # [M]
        return (p_any * survival(p_any))[:, None] * which.softmax(1)

    def still_there(self, logits: torch.Tensor, j: int, a: int) -> torch.Tensor:
        """log-odds that pair a, seen entering at entry j (the one after the named time's), is in view at the end."""
        x = logits[:, :len(ATTRIBUTES)]
        events = logits[:, len(ATTRIBUTES):]
        xa, shape = x[:, a], x[:, self.same_shape[a]].amax(1)
        pad = torch.tensor([NOT_THERE])
        later = lambda v: v[j + 1:] if len(v) > j + 1 else pad  # noqa: E731
        drops = xa[j:-1] - xa[j + 1:] if len(xa) > j + 1 else pad
        f = torch.stack([xa[-1], xa[j], later(xa).min(), drops.max(), later(events[:, _LEAVES[a]]).max(),
                         later(events[:, _CHANGES].amax(1)).max(), shape[-1], later(shape).min(),
                         torch.tensor(len(xa) - j, dtype=x.dtype).log1p() / LOGIT_SCALE])
        return self.present(f).squeeze(-1)

    # ---- a question's answer ----

    @torch.no_grad()
    def read(self, tokens: torch.Tensor, starts: list[float], t: float, question: torch.Tensor,
             options: list[tuple[str, torch.Tensor]] | None = None) -> tuple[str, list[int]] | None:
        """The answer to a question naming time t (its input embeddings `question`) over a memory's entries
        (tokens [N, K, D], their start times), as the LLM would write it or one of `options` (each its text and
        embeddings), and the entries it rests on; None where the question asks for none of these readings, or
        its options do not fit one."""
        reading = READINGS[int(self.reading_logits(question).argmax())]
        if reading == "none":
            return None
        logits, j = self.logits(tokens), entry_at(starts, t)
        pairs = [int(self.pair_logits(e).argmax()) for _, e in options or []]
        if reading == "first_of":
            if len(pairs) != 2 or pairs[0] == pairs[1]:
                return None
            p = self.enter_chances(logits, j)
            won = 0 if first_logit(p, *pairs) > 0 else 1
            return options[won][0], [j + int((p[:, pairs[won]] * survival(p[:, pairs[won]])).argmax())]
        named = int(self.pair_logits(question).argmax())
        seen = min(j + 1, len(starts) - 1)
        if reading == "next_after":
            joint = self.next_after(logits, j, named)
            chances = joint.sum(0)
            pick = int(chances.argmax()) if not options else pairs[max(range(len(pairs)), key=lambda i: float(chances[pairs[i]]))]
            text = " ".join(ATTRIBUTES[pick]) if not options else options[pairs.index(pick)][0]
            return text, [seen, j + int(joint[:, pick].argmax())]
        answer = "yes" if self.still_there(logits, seen, named) > 0 else "no"
        if options is not None:
            answer = next((o for o, _ in options if o.lower() == answer), None)
        return (answer, [seen, len(starts) - 1]) if answer is not None else None

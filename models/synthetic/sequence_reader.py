"""Answering questions that name a time (and one about now) from the memory's sequence of entries.

These questions rest on entries across a memory of minutes: the next object to enter after a named one may
come three quiet minutes later, whether an object is still there is its absence from every entry since it
was seen, and a count over five minutes spans dozens of entries, more than a prompt holds, and the LLM
reading a prompt of a few cubes answers them poorly (docs/research-notes.md). Like the `EventLocator`, this reads every entry through a linear probe
started as the kept training one (`CubeProbe.head`: each (colour, shape) pair in view at an entry's end,
and which events begin in it; `fit_reader` fine-tunes it at a small rate), as features of an entry beside
its neighbours, scored by small MLPs:

- "which entered first after t: the a or the b?": the chance that each pair enters at each entry after t
  (`enter_chances`), P(a's first enter comes before b's) from the two first-enter distributions (ties half);
- "what entered next after the a that entered at t?" (`next_after`): the chance that anything enters at
  each entry after t and which pair it is (a's own enter masked), the first such entry's pair;
- "is the a that entered at t still there?" (`still_there`): whether the pair seen entering at t is in view
  at the end, has dropped out since, or another colour of its shape has come in (a colour change);
- "what shape / colour entered (changed colour) at t?", "what colour did the bar turn at t?" (`event_at`):
  which pair the event brought into view, from the entries around t;
- "how many [red] objects / bars entered between t=a and t=b (since t=a)?" (`count_chances`): the chance
  that something enters in [a, b] at each entry near it and which pair it is, the count the most likely
  number of entries to come true (`count_distribution`) with a pair of the colour or shape named;
- and one question that names no time: "what colour is the bar?" (`colour_now`), the colour of the shape
  named in view at the newest entry (the LLM, reading cubes picked from all the memory, often names a colour
  the shape had had earlier).

An object shows in the entry that starts just after its enter begins (the boundary head closes a cube at
the enter), so the entry holding a named time t is the one before the object is seen. Which reading a
question asks for comes from a linear map of its words' mean input embedding (as the locator's key), the
pair it names from a colour score plus a shape score, each a soft maximum over its words (a 30-way map of
the mean word, or a hard maximum, names the pair far less often), a count's or a "turn"'s noun from one of the two scores; the named time
or span from its "t=...s". Fitted on live memories of training worlds with every other weight frozen
(`fit_reader`).
"""
from __future__ import annotations

import bisect

import torch
import torch.nn as nn
import torch.nn.functional as F

from models.synthetic.event_locator import LOGIT_SCALE, NOT_THERE
from models.synthetic.vocabulary import ATTRIBUTES, COLOURS, EVENT_KEYS, SHAPES

READINGS = ("none", "first_of", "next_after", "still_there", "shape_at", "colour_at", "colour_turned",
            "count_all", "count_colour", "count_shape", "colour_now")  # "none": a question for the LLM
PRESENT_FEATURES = 9
ENTER_FEATURES = 5
EVENT_OFFSETS = (-1, 0, 1, 2)  # the entries "what entered at t" reads, from the one holding t
COUNT_FEATURES = ENTER_FEATURES + 2 + 5  # its enter features, a colour change's two, where it lies
COUNT_SQUASH_S = 3.0  # an entry's start and end against the span's ends, in seconds, through tanh(x / this)
MAX_COUNT = 9  # as `make_questions` asks
SHAPE_NOUN = ("count_shape", "colour_turned", "colour_now")  # the readings whose question names a shape
_LEAVES = [EVENT_KEYS.index(("leave", c, s)) for c, s in ATTRIBUTES]
_ENTERS = [EVENT_KEYS.index(("enter", c, s)) for c, s in ATTRIBUTES]
_CHANGES = [EVENT_KEYS.index(("change", c)) for c in COLOURS]
_CHANGE_OF_PAIR = [EVENT_KEYS.index(("change", c)) for c, _ in ATTRIBUTES]


def _mlp(n_in: int, hidden: int, depth: int = 1) -> nn.Sequential:
    layers = [nn.Linear(n_in, hidden), nn.GELU()]
    for _ in range(depth - 1):
        layers += [nn.Linear(hidden, hidden), nn.GELU()]
    return nn.Sequential(*layers, nn.Linear(hidden, 1))


def survival(p: torch.Tensor) -> torch.Tensor:
    """[M, ...] chances of an event at each entry -> the chance that none came at an earlier entry."""
    return torch.cat([torch.ones_like(p[:1]), torch.cumprod(1 - p, 0)[:-1]])


def first_logit(p: torch.Tensor, a: int, b: int) -> torch.Tensor:
    """[M, A] enter chances -> log P(a enters first) - log P(b enters first); a tie at one entry counts half."""
    sa, sb = survival(p[:, a]), survival(p[:, b])
    fa, fb = p[:, a] * sa, p[:, b] * sb
    return torch.log((fa * (sb - 0.5 * fb)).sum() + 1e-6) - torch.log((fb * (sa - 0.5 * fa)).sum() + 1e-6)


def count_distribution(p: torch.Tensor, size: int = 32) -> torch.Tensor:
    """[n] independent chances -> [size] the distribution of how many come true (exact while n < size; the
    generating function's product, evaluated at the size-th roots of unity and transformed back)."""
    z = torch.exp(2j * torch.pi * torch.arange(size, dtype=p.dtype) / size)
    product = torch.exp(torch.log((1 - p)[:, None] + p[:, None] * z).sum(0))
    return (torch.fft.fft(product).real / size).clamp(min=0)


def count_span(named: tuple[float, float], spans: list[tuple[float, float]]) -> tuple[float, float]:
    """The span a count asks about: "between t=a and t=b", or "since t=a" (until the newest entry's end)."""
    return named if named[1] > named[0] else (named[0], spans[-1][1])


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
        self.event = _mlp(4 * len(EVENT_OFFSETS), 2 * hidden)
        self.count = _mlp(COUNT_FEATURES, 2 * hidden, depth=2)
        self.count_any = _mlp(COUNT_FEATURES + 2, 2 * hidden)
        same_shape = torch.tensor([[s == s2 for _, s2 in ATTRIBUTES] for _, s in ATTRIBUTES])
        self.register_buffer("same_shape", same_shape, persistent=False)
        other_colour = same_shape & ~torch.eye(len(ATTRIBUTES), dtype=torch.bool)  # its shape, another colour
        self.register_buffer("other_colour", other_colour, persistent=False)
        with torch.no_grad():  # most entries start no enter: begin there, not at even odds
            self.first[-1].bias.fill_(-4.0), self.next_any[-1].bias.fill_(-2.0), self.count_any[-1].bias.fill_(-4.0)

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

    def colour_logits(self, text: torch.Tensor) -> torch.Tensor:  # words' embeddings [L, H] -> [len(COLOURS)]
        return self.colour(self._unit(text)).logsumexp(0)

    def shape_logits(self, text: torch.Tensor) -> torch.Tensor:  # words' embeddings [L, H] -> [len(SHAPES)]
        return self.shape(self._unit(text)).logsumexp(0)

    def pair_logits(self, text: torch.Tensor) -> torch.Tensor:  # words' embeddings [L, H] -> [A]
        return (self.colour_logits(text)[:, None] + self.shape_logits(text)[None, :]).flatten()

    def named_noun(self, reading: str, question: torch.Tensor) -> int | None:
        """The colour (count_colour) or shape (count_shape, colour_turned, colour_now) the question names, as an index."""
        if reading == "count_colour":
            return int(self.colour_logits(question).argmax())
        return int(self.shape_logits(question).argmax()) if reading in SHAPE_NOUN else None

    @staticmethod
    def counted_pairs(reading: str, noun: int | None) -> torch.Tensor:
        """[A] bool: the pairs a count reading counts: all objects, or those of the colour or shape named."""
        if reading == "count_all":
            return torch.ones(len(ATTRIBUTES), dtype=torch.bool)
        if reading == "count_colour":
            return torch.tensor([c == COLOURS[noun] for c, _ in ATTRIBUTES])
        return torch.tensor([s == SHAPES[noun] for _, s in ATTRIBUTES])

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

    def event_at(self, logits: torch.Tensor, j: int) -> torch.Tensor:
        """[A] logits: which pair the enter or colour change at the named time brought into view, from each pair
        in view, its enter logit, its colour's change logit, and its shape in another colour, at the entries
        around j (the one holding the time; the object shows from the next)."""
        x, events = logits[:, :len(ATTRIBUTES)], logits[:, len(ATTRIBUTES):]
        per_entry = torch.stack([x, events[:, _ENTERS], events[:, _CHANGE_OF_PAIR],
                                 x[:, None, :].masked_fill(~self.other_colour, -torch.inf).amax(-1)], -1)  # [N, A, 4]
        pad = torch.full_like(per_entry[0], NOT_THERE)
        f = torch.cat([per_entry[j + o] if 0 <= j + o < len(x) else pad for o in EVENT_OFFSETS], -1)
        return self.event(f).squeeze(-1)

    @staticmethod
    def colour_now(logits: torch.Tensor, shape: int) -> torch.Tensor:
        """[len(COLOURS)]: each colour's in-view logit of the named shape at the newest entry, which holds now."""
        return logits[-1, :len(ATTRIBUTES)].view(len(COLOURS), len(SHAPES))[:, shape]

    def count_chances(self, logits: torch.Tensor, spans: list[tuple[float, float]], a: float, b: float,
                      pairs: torch.Tensor) -> tuple[int, torch.Tensor]:
        """The first entry near [a, b] and [M]: the chance that an object of `pairs` ([A] bool) enters in [a, b] at
        each entry from it. Whether anything entered at an entry and which pair it was are read apart, as
        `next_after` reads them: a per-pair chance of an enter was content to split one uncertain enter among
        look-alike pairs (a blue circle 0.46 a blue square), which a count of all objects summed short.
        Each pair's enter score reads its enter features, its colour's change logit and the drop of its shape in
        other colours (a colour change brings a pair into view too, and is no enter), and where the entry lies
        against a and b; the entry's chance reads them all, pooled over pairs. Two enters in one entry are rare
        and count once."""
        starts, ends = torch.tensor(spans, dtype=logits.dtype).T
        near = ((ends > a - 10) & (starts < b + 10)).nonzero().flatten()  # an enter shows at most an entry late
        if not len(near):
            return 0, logits.new_zeros(0)
        i0, i1 = int(near[0]), int(near[-1]) + 1
        where = torch.stack([(starts - a) / COUNT_SQUASH_S, (b - starts) / COUNT_SQUASH_S, (ends - a) / COUNT_SQUASH_S,
                             (b - ends) / COUNT_SQUASH_S], -1).tanh()
        where = torch.cat([where, torch.log1p(ends - starts)[:, None] / LOGIT_SCALE], -1)[i0:i1]
        x, events = logits[:, :len(ATTRIBUTES)], logits[:, len(ATTRIBUTES):]
        before = torch.cat([torch.full_like(x[:1], NOT_THERE), x[:-1]])
        drop = (before - x)[:, None, :].masked_fill(~self.other_colour, -torch.inf).amax(-1)  # another colour gone
        f = torch.cat([self.enter_features(logits), events[:, _CHANGE_OF_PAIR, None], drop[..., None]], -1)[i0:i1]
        f = torch.cat([f, where[:, None].expand(-1, len(ATTRIBUTES), -1)], -1)
        which = self.count(f).squeeze(-1)  # [M, A]
        entry = torch.cat([f.amax(1), which.amax(1, keepdim=True), which.logsumexp(1, keepdim=True)], -1)
        p_any = torch.sigmoid(self.count_any(entry).squeeze(-1))
        return i0, p_any * which.softmax(1)[:, pairs].sum(1)

    # ---- a question's answer ----

    @torch.no_grad()
    def read(self, tokens: torch.Tensor, spans: list[tuple[float, float]], named: tuple[float, float] | None,
             question: torch.Tensor, options: list[tuple[str, torch.Tensor]] | None = None
             ) -> tuple[str, list[int]] | None:
        """The answer to a question naming the span `named` (one time: (t, t); its input embeddings `question`)
        over a memory's entries (tokens [N, K, D], their (start, end) times), as the LLM would write it or one of
        `options` (each its text and embeddings), and the entries it rests on; None where the question asks for
        none of these readings, or its options do not fit one."""
        reading = READINGS[int(self.reading_logits(question).argmax())]
        if reading == "colour_now":
            colour = self.colour_now(self.logits(tokens[-1:]), self.named_noun(reading, question))
            return self._fit(COLOURS[int(colour.argmax())], [len(spans) - 1], options)
        if reading == "none" or named is None:  # every other reading reads from a time the question names
            return None
        starts = [a for a, _ in spans]
        logits, j = self.logits(tokens), entry_at(starts, named[0])
        seen = min(j + 1, len(starts) - 1)
        if reading.startswith("count"):
            i0, p = self.count_chances(logits, spans, *count_span(named, spans),
                                       self.counted_pairs(reading, self.named_noun(reading, question)))
            n = int(count_distribution(p)[:MAX_COUNT + 1].argmax())
            rests_on = [i0 + i for i in (p > 0.5).nonzero().flatten().tolist()] or [j]
            return self._fit(str(n), rests_on, options)
        if reading in ("shape_at", "colour_at", "colour_turned"):
            event = self.event_at(logits, j).view(len(COLOURS), len(SHAPES))
            if reading == "shape_at":
                text = SHAPES[int(event.logsumexp(0).argmax())]
            else:  # "what colour turned the bar": the bar's colours only
                shape = self.named_noun(reading, question)
                text = COLOURS[int((event[:, shape] if shape is not None else event.logsumexp(1)).argmax())]
            return self._fit(text, [j, seen], options)
        pairs = [int(self.pair_logits(e).argmax()) for _, e in options or []]
        if reading == "first_of":
            if len(pairs) != 2 or pairs[0] == pairs[1]:
                return None
            p = self.enter_chances(logits, j)
            won = 0 if first_logit(p, *pairs) > 0 else 1
            return options[won][0], [j + int((p[:, pairs[won]] * survival(p[:, pairs[won]])).argmax())]
        named_pair = int(self.pair_logits(question).argmax())
        if reading == "next_after":
            joint = self.next_after(logits, j, named_pair)
            chances = joint.sum(0)
            pick = int(chances.argmax()) if not options else pairs[max(range(len(pairs)), key=lambda i: float(chances[pairs[i]]))]
            text = " ".join(ATTRIBUTES[pick]) if not options else options[pairs.index(pick)][0]
            return text, [seen, j + int(joint[:, pick].argmax())]
        return self._fit("yes" if self.still_there(logits, seen, named_pair) > 0 else "no", [seen, len(starts) - 1],
                         options)

    @staticmethod
    def _fit(text: str, rests_on: list[int], options: list[tuple[str, torch.Tensor]] | None) -> tuple[str, list[int]] | None:
        """The answer as one of `options`, where given; None where none of them is it."""
        if options is not None:
            text = next((o for o, _ in options if o.lower() == text), None)
        return (text, rests_on) if text is not None else None

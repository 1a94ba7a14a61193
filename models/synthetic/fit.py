"""`cubestream fit-readers`: the default profile's readers of the whole memory (`SyntheticReaders`), fitted
on live memories of training worlds with every other weight frozen."""
from __future__ import annotations

import random

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from configs import Config
from models.answerer import named_span
from models.cube_encoder import CubeEncoder
from models.llm import CubeLLM
from models.stream_encoder import StreamEncoder
from models.synthetic.evaluate import stream_world
from models.synthetic.event_locator import EventLocator, LocatorEnsemble
from models.synthetic.probes import CubeProbe
from models.synthetic.readers import attached
from models.synthetic.sequence_reader import (READINGS, SHAPE_NOUN, SequenceReader, count_distribution, count_span, entry_at,
                                              first_logit)
from models.synthetic.vocabulary import ATTRIBUTES, COLOURS, EVENT_KEYS, SHAPES
from stream.memory import RollingMemory
from stream.questions import WHEN_TOLERANCE_S, Question, make_questions, when_questions
from stream.synth import SynthWorld


def live_memories(cfg: Config, encoder: CubeEncoder, seeds: range, seconds: float, cuts: int = 3,
                  tight_budget: int | None = None, progress: bool = True) -> list[tuple[SynthWorld, list]]:
    """What the readers are fitted on: each world of `seeds` streamed `seconds` through the live path, its
    memory (a `RollingMemory` under the profile's budget, as live) taken at `cuts` evenly spaced times; with
    `tight_budget`, each cut's memory under that budget too where it merges there: a stream longer than the
    fit's worlds merges at the profile's budget, and merged entries (the mean of their cubes) read otherwise."""
    out = []
    for seed in tqdm(seeds, disable=not progress, desc="stream worlds"):
        world = SynthWorld(seed=seed, width=cfg.vision.image_size, height=cfg.vision.image_size)
        with torch.no_grad():
            cubes = stream_world(StreamEncoder(encoder.eval()), world, seconds)
        for cut in (seconds * (i + 1) / cuts for i in range(cuts)):
            for budget in (cfg.memory.token_budget, tight_budget):
                if budget is None:
                    continue
                memory = RollingMemory("eval", budget)
                for c in (c for c in cubes if c.end <= cut):
                    memory.add(c)
                if budget == cfg.memory.token_budget or any(e.level for e in memory):
                    out.append((world, memory.entries()))
    return out


def _reader_optimizer(module: torch.nn.Module, probe_lr: float) -> torch.optim.Optimizer:
    """The readers' heads at 3e-3; their copy of the probe at `probe_lr`, without decay (it starts fitted)."""
    heads = [p for name, p in module.named_parameters() if not name.startswith("probe.")]
    return torch.optim.AdamW([{"params": heads},
                              {"params": list(module.probe.parameters()), "lr": probe_lr, "weight_decay": 0.0}],
                             lr=3e-3, weight_decay=1e-4)


def fit_locator(cfg: Config, llm: CubeLLM, probe: CubeProbe, memories: list, steps: int = 3000,
                probe_lr: float = 3e-5, fits: int = 3, progress: bool = True) -> dict:
    """A fresh `LocatorEnsemble` of `fits` locators, each fitted from its own seed (cfg.seed + k) on
    `live_memories` of training worlds, everything else frozen; set as the locator of `llm.readers`. In each
    memory every "When did ... last ...?" that the log answers is asked. Each locator's probe starts as `probe`
    (the checkpoint's fitted training-only one) and is fine-tuned at `probe_lr`, as the reader's (better than
    frozen). Returns the mean over fits of the last 200 steps' losses."""
    width = llm.lm.get_input_embeddings().embedding_dim
    rows = []  # (entries' tokens, their ages, the question's embeddings, its key, the entries a right answer may start)
    with torch.no_grad():
        for world, entries in memories:
            now = entries[-1].end
            starts = torch.tensor([e.start for e in entries])
            tokens = torch.stack([e.tokens for e in entries])
            for q in when_questions(world, now):
                right = ((starts - q.answer_time).abs() <= WHEN_TOLERANCE_S).nonzero().flatten().tolist()
                if right:
                    rows.append((tokens, now - starts, llm.embed_text(q.text), EVENT_KEYS.index(q.event_key), right))
    located, final = [], []
    for k in range(fits):
        torch.manual_seed(cfg.seed + k)
        locator = EventLocator(cfg.resampler.out_dim, width)
        locator.probe.load_state_dict(probe.head.state_dict())
        opt = _reader_optimizer(locator, probe_lr)
        rng, losses = random.Random(cfg.seed + k), []
        for _ in tqdm(range(steps), disable=not progress, desc=f"fit locator {k + 1}/{fits}"):
            tokens, ages, question, key, right = rng.choice(rows)
            keys = locator.key_logits(question)
            scores = locator.entry_scores(locator.features(tokens, ages)) @ keys.softmax(0)  # through the probe, as it learns
            loss = scores.logsumexp(0) - scores[right].logsumexp(0) + F.cross_entropy(keys[None], torch.tensor([key]))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(loss.item())
        final.append(float(np.mean(losses[-200:])))
        located.append(locator)
    attached(llm).locator = LocatorEnsemble(located).eval()
    return {"questions": len(rows), "loss": float(np.mean(final))}


def reading_of(q: Question) -> str:
    """The `SequenceReader` reading that answers q (the reader learns to tell it from the words)."""
    if q.kind == "present":
        return "still_there"
    if q.kind == "order":
        return "first_of" if q.options else "next_after"
    if named_span(q.text) is None:  # about what is in view now: the LLM's, but for a shape's colour
        return "colour_now" if q.kind == "colour" else "none"
    if q.kind == "count":
        noun = q.text.split()[2]  # "How many <objects | red objects | circles> entered ..."
        return "count_all" if noun == "objects" else "count_colour" if noun in COLOURS else "count_shape"
    if q.kind == "shape":
        return "shape_at"
    if q.kind == "colour":
        return "colour_turned" if " turn " in q.text else "colour_at"
    return "none"


def true_noun(q: Question) -> int:
    """The colour (count_colour) or shape (count_shape, colour_turned, colour_now) a question names, as an index, read
    from its text: the target the reader's `named_noun` learns from the words' embeddings."""
    word = q.text.split()[4] if q.kind != "count" else q.text.split()[2]  # "What colour did the <shape> turn / is the <shape>?"
    return COLOURS.index(word) if word in COLOURS else next(i for i, s in enumerate(SHAPES) if word.startswith(s))


def event_pair(world: SynthWorld, q: Question) -> int:
    """The pair (its index in ATTRIBUTES) that the enter or colour change a "what shape / colour ... at t" question
    asks about brought into view."""
    e = next(e for e in world.events_until(q.asked_at) if e.t == q.cues[0] and e.kind in ("enter", "change"))
    return ATTRIBUTES.index((e.colour, e.shape))


def pair_of(description: str) -> int:  # "red circle" -> its index in ATTRIBUTES
    return ATTRIBUTES.index(tuple(description.split()))


def fit_reader(cfg: Config, llm: CubeLLM, probe: CubeProbe, memories: list, questions: int = 90, steps: int = 15000,
               probe_lr: float = 3e-5, progress: bool = True) -> dict:
    """A fresh `SequenceReader` fitted on `live_memories` of training worlds, everything else frozen; set as
    the reader of `llm.readers`. Its probe starts as `probe` (the checkpoint's training-only one) and is
    fine-tuned at `probe_lr`, a hundredth of the heads' rate: enough to sharpen what it reads of enters and
    colour changes, little enough not to learn the training memories by heart. In each memory `questions` of every kind are asked (`make_questions`): those of its readings
    teach it to answer, all of them which reading a question asks for. Each step takes one question of a
    reading, the readings in turn, and one for the LLM. Returns the number of questions of each reading and the
    mean of the last 300 steps' losses."""
    torch.manual_seed(cfg.seed)
    attached(llm).reader = reader = SequenceReader(cfg.resampler.out_dim, llm.lm.get_input_embeddings().embedding_dim)
    reader.probe.load_state_dict(probe.head.state_dict())
    rng = random.Random(cfg.seed)
    rows: dict[str, list[dict]] = {r: [] for r in READINGS}
    with torch.no_grad():
        for world, entries in memories:
            tokens = torch.stack([e.tokens for e in entries])
            spans = [(e.start, e.end) for e in entries]
            for q in make_questions(world, entries[-1].end, rng, n=questions):
                row = {"text": llm.embed_words(q.text)}
                if (reading := reading_of(q)) != "none":
                    row["tokens"] = tokens
                if (named := named_span(q.text)) is not None:
                    row["j"] = entry_at([a for a, _ in spans], named[0])
                if reading == "first_of":
                    row |= {"pairs": [pair_of(o) for o in q.options], "options": [llm.embed_words(o) for o in q.options],
                            "target": float(q.answer == q.options[0])}
                elif reading in ("next_after", "still_there"):
                    row |= {"pair": ATTRIBUTES.index(q.event_key[1:]),
                            "target": pair_of(q.answer) if reading == "next_after" else float(q.answer == "yes")}
                    if row["target"] == row["pair"] and reading == "next_after":
                        continue  # one alike entered next: the reading masks the named pair's enter, so cannot say it
                elif reading in ("shape_at", "colour_at", "colour_turned"):
                    row |= {"target": event_pair(world, q)}
                elif reading == "colour_now":
                    row |= {"target": COLOURS.index(q.answer)}
                elif reading != "none":  # the counts: which pairs count is taught on the true ones
                    row |= {"spans": spans, "span": count_span(named, spans), "target": int(q.answer)}
                if reading in ("count_colour", *SHAPE_NOUN):
                    row["noun"] = true_noun(q)
                if reading.startswith("count"):
                    row["pairs"] = SequenceReader.counted_pairs(reading, row.get("noun"))
                rows[reading].append(row)
    opt = _reader_optimizer(reader, probe_lr)
    ce = lambda logits, i: F.cross_entropy(logits[None], torch.tensor([i]))  # noqa: E731
    losses = []
    for step in tqdm(range(steps), disable=not progress, desc="fit reader"):
        reading = READINGS[1 + step % (len(READINGS) - 1)]
        if not rows[reading]:
            continue
        r = rng.choice(rows[reading])
        r = {**r, "logits": reader.logits(r["tokens"])}  # through the probe, as it learns
        if reading == "first_of":  # the true pairs read; the pair head learns them from the options' words
            loss = F.binary_cross_entropy_with_logits(first_logit(reader.enter_chances(r["logits"], r["j"]), *r["pairs"]),
                                                      torch.tensor(r["target"]))
            loss = loss + sum(ce(reader.pair_logits(o), p) for o, p in zip(r["options"], r["pairs"])) / 2
        elif reading in ("next_after", "still_there"):
            if reading == "next_after":
                loss = -torch.log(reader.next_after(r["logits"], r["j"], r["pair"]).sum(0)[r["target"]] + 1e-9)
            else:
                seen = min(r["j"] + 1, len(r["logits"]) - 1)
                loss = F.binary_cross_entropy_with_logits(reader.still_there(r["logits"], seen, r["pair"]),
                                                          torch.tensor(r["target"]))
            loss = loss + ce(reader.pair_logits(r["text"]), r["pair"])
        elif reading in ("shape_at", "colour_at", "colour_turned"):
            loss = ce(reader.event_at(r["logits"], r["j"]), r["target"])
        elif reading == "colour_now":  # the probe's logits: only its copy learns, at its small rate
            loss = ce(reader.colour_now(r["logits"], r["noun"]), r["target"])
        else:
            _, p = reader.count_chances(r["logits"], r["spans"], *r["span"], r["pairs"])
            loss = -torch.log(count_distribution(p)[r["target"]] + 1e-6)
        if reading == "count_colour":
            loss = loss + ce(reader.colour_logits(r["text"]), r["noun"])
        elif reading in SHAPE_NOUN:
            loss = loss + ce(reader.shape_logits(r["text"]), r["noun"])
        loss = (loss + ce(reader.reading_logits(r["text"]), READINGS.index(reading))
                + ce(reader.reading_logits(rng.choice(rows["none"])["text"]), 0))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    reader.eval()
    return {"questions": {r: len(v) for r, v in rows.items()}, "loss": float(np.mean(losses[-300:]))}



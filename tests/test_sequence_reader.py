"""The SequenceReader: its features and first-enter arithmetic on hand-made entries, a fit that learns to
tell its readings and read them on live memories, a checkpoint round trip, and the Answerer's use of it."""
import pytest
import torch
from safetensors.torch import load_file, save_file

from configs import load_config
from models.answerer import Answerer, named_span
from models.checkpoint import checkpoint_dir, load_model, save_checkpoint
from models.synthetic.event_locator import LOGIT_SCALE, NOT_THERE
from models.synthetic.sequence_reader import (COLOURS, EVENT_OFFSETS, READINGS, SequenceReader, count_distribution, count_span,
                                              entry_at, first_logit, survival)
from models.synthetic.fit import fit_reader, live_memories, pair_of, reading_of
from models.synthetic.probes import CubeProbe, load_probes
from models.synthetic.vocabulary import ATTRIBUTES, EVENT_KEYS
from stream.questions import make_questions
import itertools

from stream.synth import SHAPES, SynthWorld

IN, OUT = 10.0, -10.0  # probe logits: in view, out of view
RED_BAR, BLUE_CIRCLE = ATTRIBUTES.index(("red", "bar")), ATTRIBUTES.index(("blue", "circle"))


def reader_reading_logits_directly() -> SequenceReader:
    """Tokens [N, 1, A + E] are the probe's logits themselves."""
    n = len(ATTRIBUTES) + len(EVENT_KEYS)
    reader = SequenceReader(token_dim=n, width=8)
    with torch.no_grad():
        reader.probe.weight.copy_(torch.eye(n)), reader.probe.bias.zero_()
    return reader


def test_enter_features_mark_where_an_object_comes_into_view():
    reader = reader_reading_logits_directly()
    tokens = torch.full((5, 1, len(ATTRIBUTES) + len(EVENT_KEYS)), OUT)
    tokens[2:, 0, RED_BAR] = IN  # in view from entry 2 on
    tokens[2, 0, len(ATTRIBUTES) + EVENT_KEYS.index(("enter", "red", "bar"))] = IN
    f = reader.enter_features(reader.logits(tokens))[:, RED_BAR]
    s_in, s_out = IN / LOGIT_SCALE, OUT / LOGIT_SCALE
    assert f[:, 0].tolist() == [s_out, s_out, s_in, s_out, s_out]  # its enter logit
    assert f[:, 1].tolist() == [s_out - NOT_THERE, 0.0, s_in - s_out, 0.0, 0.0]  # the rise into view
    assert f[:, 3].tolist() == [s_out, s_out, s_in, s_in, s_in]  # in view here
    assert (reader.enter_features(reader.logits(tokens))[:, BLUE_CIRCLE, 1] <= 0).all()  # never came in


def test_first_logit_orders_two_first_enters_and_calls_a_tie_even():
    p = torch.zeros(6, len(ATTRIBUTES))
    p[1, BLUE_CIRCLE] = p[4, BLUE_CIRCLE] = 0.9  # blue circle first enters at entry 1
    p[3, RED_BAR] = 0.9
    assert first_logit(p, BLUE_CIRCLE, RED_BAR) > 2 and first_logit(p, RED_BAR, BLUE_CIRCLE) < -2
    p[3, RED_BAR], p[1, RED_BAR], p[4, RED_BAR] = 0.0, 0.9, 0.9  # both at entries 1 and 4
    assert abs(float(first_logit(p, BLUE_CIRCLE, RED_BAR))) < 1e-5
    assert survival(torch.tensor([0.5, 0.5, 1.0, 0.3])).tolist() == [1.0, 0.5, 0.25, 0.0]
    assert entry_at([0.0, 4.0, 9.0], 3.9) == 0 and entry_at([0.0, 4.0, 9.0], 9.0) == 2 and entry_at([2.0], 1.0) == 0


def test_next_after_ignores_the_named_enter_and_is_a_distribution():
    torch.manual_seed(0)
    reader = reader_reading_logits_directly()
    tokens = torch.full((6, 1, len(ATTRIBUTES) + len(EVENT_KEYS)), OUT)
    tokens[1:, 0, RED_BAR] = IN
    joint = reader.next_after(reader.logits(tokens), 0, RED_BAR)
    assert joint.shape == (6, len(ATTRIBUTES)) and (joint >= 0).all() and joint.sum() <= 1 + 1e-6
    # the named red bar's own enter, in the entry holding the named time or the next, is not "next"
    red_enter = len(ATTRIBUTES) + EVENT_KEYS.index(("enter", "red", "bar"))
    loud = tokens.clone()
    loud[:2, 0, red_enter] = IN
    assert torch.equal(reader.next_after(reader.logits(loud), 0, RED_BAR), joint)
    blue = tokens.clone()  # another pair's is
    blue[1, 0, len(ATTRIBUTES) + EVENT_KEYS.index(("enter", "blue", "circle"))] = IN
    assert not torch.equal(reader.next_after(reader.logits(blue), 0, RED_BAR), joint)


def test_count_distribution_is_the_exact_distribution_of_how_many_independent_chances_come_true():
    p = torch.tensor([0.9, 0.2, 0.5, 0.7, 0.05], dtype=torch.float64)
    brute = torch.zeros(len(p) + 1, dtype=torch.float64)
    for outcome in itertools.product((0, 1), repeat=len(p)):
        brute[sum(outcome)] += torch.prod(torch.where(torch.tensor(outcome, dtype=torch.bool), p, 1 - p))
    d = count_distribution(p, size=16)
    assert torch.allclose(d[:len(p) + 1], brute, atol=1e-9) and d[len(p) + 1:].abs().max() < 1e-9
    assert count_distribution(torch.zeros(0), size=8)[0] == 1.0  # nothing to count: 0 for sure


def test_count_span_and_counted_pairs():
    spans = [(0.0, 5.0), (5.0, 9.0), (9.0, 30.5)]
    assert count_span((10.0, 20.0), spans) == (10.0, 20.0)  # "between t=10s and t=20s"
    assert count_span((10.0, 10.0), spans) == (10.0, 30.5)  # "since t=10s": until the newest entry's end
    assert SequenceReader.counted_pairs("count_all", None).all()
    reds = SequenceReader.counted_pairs("count_colour", COLOURS.index("red"))
    bars = SequenceReader.counted_pairs("count_shape", SHAPES.index("bar"))
    assert reds.sum() == len(SHAPES) and reds[RED_BAR] and not reds[BLUE_CIRCLE]
    assert bars.sum() == len(COLOURS) and bars[RED_BAR] and not bars[BLUE_CIRCLE]


def test_count_chances_reads_only_entries_near_the_span_and_event_at_pads_the_memory_ends():
    torch.manual_seed(0)
    reader = reader_reading_logits_directly()
    tokens = torch.full((8, 1, len(ATTRIBUTES) + len(EVENT_KEYS)), OUT)
    spans = [(10.0 * i, 10.0 * (i + 1)) for i in range(8)]
    every = SequenceReader.counted_pairs("count_all", None)
    i0, p = reader.count_chances(reader.logits(tokens), spans, 40.0, 45.0, every)
    assert i0 == 3 and p.shape == (3,) and ((p > 0) & (p < 1)).all()  # entries 3-5 touch [30, 55]
    assert reader.count_chances(reader.logits(tokens), spans, 500.0, 600.0, every)[1].shape == (0,)
    tokens[5:, 0, RED_BAR] = IN  # the red bar shows from entry 5
    logits = reader.logits(tokens)
    for j in (0, 4, 7):  # offsets past either end read as nothing there
        assert reader.event_at(logits, j).shape == (len(ATTRIBUTES),)
    moved = tokens.clone()
    moved[5 + max(EVENT_OFFSETS) + 1:, 0, BLUE_CIRCLE] = IN  # beyond the entries event_at reads around j = 4
    assert torch.equal(reader.event_at(reader.logits(moved), 4), reader.event_at(logits, 4))
    assert not torch.equal(reader.event_at(logits, 4), reader.event_at(reader.logits(torch.full_like(tokens, OUT)), 4))


@pytest.fixture(scope="module")
def fitted():
    """The shipped encoder and probe, a reader fitted on 4 short live memories of training worlds."""
    cfg = load_config("default")
    encoder, llm = load_model(cfg)
    probe = CubeProbe(cfg.resampler.out_dim)
    assert load_probes(checkpoint_dir(cfg), probe, None)
    memories = live_memories(cfg, encoder, range(2), 600.0, cuts=2, progress=False)
    first = fit_reader(cfg, llm, probe, memories, steps=30, progress=False)
    last = fit_reader(cfg, llm, probe, memories, steps=3000, progress=False)
    return cfg, encoder, llm, memories, first, last


def test_a_fit_lowers_the_loss_and_learns_which_reading_a_question_asks_for(fitted):
    cfg, _, llm, memories, first, last = fitted
    # "what colour is the bar?" is asked of the last 10 s only, where no other object has its shape: rarely
    assert all(first["questions"][r] >= (1 if r == "colour_now" else 10) for r in READINGS), first["questions"]
    assert last["loss"] < 0.6 * first["loss"], (first, last)
    world = SynthWorld(seed=7, width=cfg.vision.image_size, height=cfg.vision.image_size)  # questions of another world
    questions = make_questions(world, 600.0, 3, n=60)
    with torch.no_grad():
        said = [READINGS[int(llm.readers.reader.reading_logits(llm.embed_words(q.text)).argmax())] for q in questions]
        pairs = [int(llm.readers.reader.pair_logits(llm.embed_words(o)).argmax()) == pair_of(o) for q in questions for o in q.options
                 if reading_of(q) == "first_of"]
    assert sum(s == reading_of(q) for s, q in zip(said, questions)) >= 0.9 * len(questions)
    assert {reading_of(q) for q in questions} >= set(READINGS) - {"colour_now"}
    for text, reading in (("What colour is the bar?", "colour_now"), ("What colour did the bar turn at t=40s?", "colour_turned"),
                          ("What shape is the red object?", "none")):
        assert READINGS[int(llm.readers.reader.reading_logits(llm.embed_words(text)).argmax())] == reading, text
    # the pairs options name: from 4 short memories, well above chance (1 in 30); the shipped reader's in test_shipped_model
    assert sum(pairs) >= 5 * len(pairs) / 30 and len(pairs) >= 4


def test_an_enter_is_counted_once_whichever_pair_it_looks_like():
    """Whether anything entered and which pair it was are read apart: the chances of one entry's enter split among
    pairs, so the counts by colour add up to the count of all objects, and a subset never counts more."""
    torch.manual_seed(0)
    reader = reader_reading_logits_directly()
    tokens = torch.full((6, 1, len(ATTRIBUTES) + len(EVENT_KEYS)), OUT)
    tokens[3:, 0, RED_BAR] = IN  # a red bar comes into view at entry 3, looking a little like a blue circle
    tokens[3:, 0, BLUE_CIRCLE] = 0.0
    spans = [(5.0 * i, 5.0 * (i + 1)) for i in range(6)]
    logits = reader.logits(tokens)
    chances = lambda reading, noun: reader.count_chances(logits, spans, 5.0, 25.0,  # noqa: E731
                                                         SequenceReader.counted_pairs(reading, noun))[1]
    every = chances("count_all", None)
    by_colour = torch.stack([chances("count_colour", c) for c in range(len(COLOURS))])
    assert torch.allclose(by_colour.sum(0), every, atol=1e-6)
    assert (chances("count_shape", SHAPES.index("bar")) <= every + 1e-7).all()
    moved = tokens.clone()  # another pair's look changes which pair, not how many
    moved[3:, 0, BLUE_CIRCLE] = OUT
    assert not torch.allclose(reader.count_chances(reader.logits(moved), spans, 5.0, 25.0,
                                                   SequenceReader.counted_pairs("count_colour", COLOURS.index("blue")))[1],
                              chances("count_colour", COLOURS.index("blue")))


def test_colour_now_reads_the_named_shape_at_the_newest_entry():
    reader = reader_reading_logits_directly()
    tokens = torch.full((4, 1, len(ATTRIBUTES) + len(EVENT_KEYS)), OUT)
    tokens[:3, 0, RED_BAR] = IN  # a red bar turned blue at the newest entry; a blue circle was there all along
    tokens[3, 0, ATTRIBUTES.index(("blue", "bar"))] = IN
    tokens[:, 0, BLUE_CIRCLE] = IN
    logits = reader.logits(tokens)
    assert COLOURS[int(reader.colour_now(logits, SHAPES.index("bar")).argmax())] == "blue"
    assert COLOURS[int(reader.colour_now(logits[:3], SHAPES.index("bar")).argmax())] == "red"
    assert COLOURS[int(reader.colour_now(logits, SHAPES.index("circle")).argmax())] == "blue"


def test_a_reader_of_an_older_layout_is_left_out_with_a_warning(fitted, tmp_path):
    cfg, encoder, llm, _, _, _ = fitted
    save_checkpoint(tmp_path, encoder, llm)
    tensors = load_file(str(tmp_path / "model.safetensors"))
    save_file({k: v for k, v in tensors.items() if not k.startswith("reader.count_any.")}, str(tmp_path / "model.safetensors"))
    with pytest.warns(UserWarning, match="fit-readers"):
        _, older = load_model(cfg, tmp_path)
    assert older.readers.reader is None and older.readers.locator is not None  # the LLM answers its questions until refitted


def test_checkpoint_round_trip_and_the_answerer_reads_with_it(fitted, tmp_path):
    cfg, encoder, llm, memories, _, _ = fitted
    save_checkpoint(tmp_path, encoder, llm)
    _, reloaded = load_model(cfg, tmp_path)
    assert reloaded.readers.reader is not None
    world, entries = memories[-1]
    q = next(q for q in make_questions(world, entries[-1].end, 1, n=40) if reading_of(q) == "still_there")
    tokens, spans = torch.stack([e.tokens for e in entries]), [(e.start, e.end) for e in entries]
    with torch.no_grad():
        for text in (q.text, "What entered next after the red bar that entered at t=30s?", "What shape entered at t=30s?",
                     "How many red objects entered between t=20s and t=80s?"):
            args = (tokens, spans, named_span(text), llm.embed_words(text))
            assert llm.readers.reader.read(*args) == reloaded.readers.reader.read(*args)
    # the answerer: the reader answers (the LLM does not run: no option scores), or where turned off, the LLM
    read = Answerer(reloaded, cfg.answer).answer(entries, q.text, q.options)
    assert read.text in q.options and read.option_logprobs is None and read.tokens_used == len(reloaded.ids(q.text))
    spans = {(e.start, e.end) for e in entries}
    assert read.citations and all((c.start, c.end) in spans for c in read.citations)
    assert read.citations[-1].end == entries[-1].end  # "still there" rests on the newest entry
    cfg_off = cfg.answer.__class__(**{**cfg.answer.__dict__, "reader": False})
    by_llm = Answerer(reloaded, cfg_off).answer(entries, q.text, q.options)
    assert by_llm.option_logprobs is not None and by_llm.tokens_used > read.tokens_used
    # a question naming no time is never the reader's
    assert Answerer(reloaded, cfg.answer).answer(entries, "Is the red bar still there?", ["yes", "no"]).option_logprobs

"""Training: a few steps lower the loss; checkpoints reload to identical outputs; resume continues."""
import math
import random

import pytest
import torch

from configs import ConfigError, load_config
from models.checkpoint import load_model
from models.cube_encoder import CubeEncoder
from models.llm import POINTER, CubeLLM
from models.synthetic.clips import (clip_segments, on_consecutive_entries, on_counted_entries, sample_clip, when_rows,
                                    with_lookalike)
from models.synthetic.fit import live_memories
from models.synthetic.probes import CubeProbe, RegionProbe, fit_probes, load_probes, which_event_loss
from models.synthetic.recipe import SyntheticRecipe
from models.synthetic.vocabulary import EVENT_KEYS
from models.train import MIN_SHOWN, absent_window, answer_target, losses, shown_cubes, train, warm_states
from stream.questions import WHEN_KINDS, Question, make_questions, when_key, when_questions
from stream.synth import SynthWorld

TINY = {"train": {"steps": 12, "clips_per_step": 2, "questions_per_clip": 3, "clip_seconds": 16.0,
                  "eval_every": 1000, "save_every": 6, "world_seconds": 300.0, "lr": 3e-3},
        "llm": {"num_layers": 2}}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    cfg = load_config(overrides=TINY)
    out = tmp_path_factory.mktemp("run")
    train(cfg, out, SyntheticRecipe(cfg), progress=False)
    return cfg, out


def held_out_loss(cfg, encoder, llm):
    torch.manual_seed(0)
    rng = random.Random(99)
    clips = [sample_clip(cfg, rng, (50_000, 50_100), {}) for _ in range(4)]
    with torch.no_grad():
        return float(losses(cfg, encoder.eval(), llm.eval(), clips, noise=0.0)["qa"])


def test_a_short_run_lowers_the_loss(trained):
    cfg, out = trained
    torch.manual_seed(cfg.seed)
    encoder, llm = load_model(cfg, out)
    untrained = CubeLLM(cfg, tokenizer=llm.tokenizer)
    before = held_out_loss(cfg, CubeEncoder(cfg), untrained)
    after = held_out_loss(cfg, encoder, llm)
    assert after < before - 0.5, (before, after)


def test_checkpoint_reloads_to_identical_outputs(trained):
    cfg, out = trained
    a_enc, a_llm = load_model(cfg, out)
    b_enc, b_llm = load_model(cfg, out)
    frames = torch.randint(0, 256, (12, 64, 64, 3), dtype=torch.uint8)
    with torch.no_grad():
        ca, cb = a_enc.encode_clip(frames), b_enc.encode_clip(frames)
        assert ca.starts == cb.starts and torch.equal(ca.tokens, cb.tokens)
        pa = a_llm.prompt([(0.0, 1.0, ca.tokens[0])], "How many objects entered since t=3s?")
        pb = b_llm.prompt([(0.0, 1.0, cb.tokens[0])], "How many objects entered since t=3s?")
        assert torch.equal(a_llm.lm(inputs_embeds=pa.embeds[None]).logits, b_llm.lm(inputs_embeds=pb.embeds[None]).logits)
        # the pointer (how "when" is answered) is saved too: two loads point alike, an unsaved one would not
        hidden = a_llm.lm(inputs_embeds=pa.embeds[None], output_hidden_states=True).hidden_states[-1][0]
        assert torch.equal(a_llm.pointer(hidden, pa), b_llm.pointer(hidden, pb))


def test_a_fine_tune_starts_from_the_saved_probes_or_fits_fresh_ones_with_the_model_frozen(trained, tmp_path):
    cfg, out = trained
    encoder, _ = load_model(cfg, out)
    saved = CubeProbe(cfg.resampler.out_dim), RegionProbe(encoder.dim)
    assert load_probes(out, *saved)  # a checkpoint carries its run's probes, as its train state has them
    state = torch.load(out / "train_state.pt", weights_only=False)
    assert torch.equal(saved[0].head.weight, state["probe"]["head.weight"])
    assert torch.equal(saved[1].head.weight, state["region_probe"]["head.weight"])
    torch.manual_seed(1)
    fresh = CubeProbe(cfg.resampler.out_dim), RegionProbe(encoder.dim)
    assert not load_probes(tmp_path, *fresh)  # none saved there: left as they are
    before = {k: v.clone() for k, v in encoder.state_dict().items()}
    rng = random.Random(5)
    first = fit_probes(cfg, encoder, *fresh, rng, {}, steps=1, progress=False)
    last = fit_probes(cfg, encoder, *fresh, rng, {}, steps=12, progress=False)
    assert last["regions"] < 0.8 * first["regions"] and last["attributes"] < first["attributes"], (first, last)
    assert all(torch.equal(v, before[k]) for k, v in encoder.state_dict().items())


def test_a_fine_tune_moves_only_the_parts_it_does_not_freeze(trained, tmp_path):
    """train.freeze: where cubes close (cubing), and the tower and scan under it, stay as loaded; the resampler
    and LLM learn."""
    cfg, out = trained
    frozen = ["vision", "temporal", "cubing"]
    tune = load_config(overrides={**TINY, "train": {**TINY["train"], "steps": 3, "freeze": frozen}})
    train(tune, tmp_path, SyntheticRecipe(tune), init=out, progress=False)
    (was, was_llm), (now, now_llm) = load_model(cfg, out), load_model(tune, tmp_path)
    for part in frozen:
        assert all(torch.equal(v, getattr(was, part).state_dict()[k]) for k, v in getattr(now, part).state_dict().items()), part
    assert any(not torch.equal(v, was.resampler.state_dict()[k]) for k, v in now.resampler.state_dict().items())
    assert not torch.equal(now_llm.projector[0].weight, was_llm.projector[0].weight)
    with pytest.raises(ConfigError, match="train.freeze: unknown part.*projector.*the parts are vision"):
        load_config(overrides={"train": {"freeze": ["projector"]}})


def test_resume_is_deterministic(tmp_path, capsys):
    """Training 4 steps, stopping, and resuming to 6 gives the weights of 6 steps straight; the run cut by
    time says how far its schedule got and how to finish it."""
    cfg = load_config(overrides={**TINY, "train": {**TINY["train"], "steps": 6, "save_every": 4}})
    train(cfg, tmp_path / "straight", SyntheticRecipe(cfg), progress=False)
    cut = load_config(overrides={**TINY, "train": {**TINY["train"], "steps": 6, "save_every": 4, "max_minutes": 1e-9}})
    train(cut, tmp_path / "resumed", SyntheticRecipe(cut), progress=False)  # stops (and saves) after its first step
    said = capsys.readouterr().out
    assert "stopping at step 1 of 6" in said and "`--resume` finishes the schedule" in said
    train(cfg, tmp_path / "resumed", SyntheticRecipe(cfg), resume=True, progress=False)
    a, _ = load_model(cfg, tmp_path / "straight")
    b, _ = load_model(cfg, tmp_path / "resumed")
    for (k, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.allclose(x, y, atol=1e-6), k


def test_real_profile_recipe_trains_only_the_new_modules(tmp_path):
    """Quicksviewer's stage 1: a pretrained vision tower and LLM loaded from local paths and frozen; the temporal
    encoder, cubing, resampler, projector and pointer train, and of the LLM only the new POINTER token's row."""
    from transformers import Qwen2Config, Qwen2ForCausalLM, SiglipVisionConfig, SiglipVisionModel

    from models.llm import POINTER, build_tokenizer
    from models.synthetic.clips import tokenizer_corpus
    torch.manual_seed(0)
    SiglipVisionModel(SiglipVisionConfig(image_size=32, patch_size=8, hidden_size=48, num_hidden_layers=1,
                                         num_attention_heads=2, intermediate_size=96,
                                         vision_use_head=False)).save_pretrained(tmp_path / "tower")
    tokenizer = build_tokenizer(tokenizer_corpus(load_config()))  # a "pretrained" tokenizer: no POINTER yet
    Qwen2ForCausalLM(Qwen2Config(vocab_size=len(tokenizer), hidden_size=96, intermediate_size=192, num_hidden_layers=2,
                                 num_attention_heads=4, num_key_value_heads=4, tie_word_embeddings=True,
                                 pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
                     ).save_pretrained(tmp_path / "lm")
    tokenizer.save_pretrained(tmp_path / "lm")
    cfg = load_config(overrides={**TINY, "train": {**TINY["train"], "steps": 8, "questions_per_clip": 6},
                                 "vision": {"pretrained": str(tmp_path / "tower"), "frozen": True},
                                 "llm": {"pretrained": str(tmp_path / "lm"), "frozen": True}, "resampler": {"out_dim": 96}})
    torch.manual_seed(cfg.seed)
    before_encoder, before_llm = CubeEncoder(cfg), CubeLLM(cfg)
    train(cfg, tmp_path / "run", SyntheticRecipe(cfg), progress=False)
    after_encoder, after_llm = load_model(cfg, tmp_path / "run")

    tower = {k: v for k, v in after_encoder.state_dict().items() if ".tower." in k}
    assert tower and all(torch.equal(v, before_encoder.state_dict()[k]) for k, v in tower.items())
    new = {k: v for k, v in after_encoder.state_dict().items() if ".tower." not in k and v.is_floating_point()}
    assert any(not torch.equal(v, before_encoder.state_dict()[k]) for k, v in new.items())
    assert not torch.equal(after_llm.projector[0].weight, before_llm.projector[0].weight)

    pointer = after_llm.tokenizer.convert_tokens_to_ids(POINTER)
    was, now = before_llm.lm.get_input_embeddings().weight, after_llm.lm.get_input_embeddings().weight
    assert not torch.equal(now[pointer], was[pointer])  # the new token learnt ...
    others = torch.arange(len(now)) != pointer
    assert torch.equal(now[others], was[others])  # ... and every pretrained row is as loaded
    for (k, v), w in zip(after_llm.lm.named_parameters(), before_llm.lm.parameters()):
        assert "embed_tokens" in k or torch.equal(v, w), k


def test_clips_in_stretches_show_the_evidence_of_their_questions():
    """train.segments > 1: a clip's frames come in separate stretches spread over minutes, as a live prompt's
    cubes are picked from a long memory; every question it asks has its evidence in frames it shows."""
    cfg = load_config(overrides={"train": {"segments": 3, "history_seconds": 600.0, "questions_per_clip": 8}})
    rng = random.Random(0)
    spans = []
    for _ in range(12):
        clip = sample_clip(cfg, rng, (0, 50), {})
        gaps = [b - a for a, b in zip(clip.times, clip.times[1:])]
        assert len(clip.times) == cfg.train.clip_seconds * 2 and min(gaps) == pytest.approx(0.5)
        assert clip.times[-1] - clip.times[0] <= cfg.train.history_seconds
        spans.append(clip.times[-1] - clip.times[0])
        for q in clip.questions:
            # present: its entry (and now); a count or an order: the entries it rests on
            ends = (q.evidence_time[:1] if q.kind == "present" else q.cues if q.kind in ("count", "order") and q.cues
                    else q.evidence_time)
            assert all(min(abs(t - f) for f in clip.times) <= 1.0 for t in ends), (q.text, q.evidence_time)
    assert max(spans) > 4 * cfg.train.clip_seconds and min(spans) == pytest.approx(cfg.train.clip_seconds - 0.5)


def test_a_moved_first_stretch_holds_an_earlier_look_alike_of_an_event_in_the_last():
    """with_lookalike: the first stretch moves, whole, onto an earlier event that a "when" question names as it
    names one in the last stretch; the stretches stay in order, apart, and within the history."""
    cfg = load_config(overrides={"train": {"segments": 3, "history_seconds": 1200.0}})
    tc, rng, moved = cfg.train, random.Random(0), 0
    keys = lambda w, a, b: {when_key(e) for e in w.events_between(a, b) if e.kind in WHEN_KINDS}
    for seed in range(40):
        world = SynthWorld(seed=seed)
        t_end = rng.uniform(tc.history_seconds, 1800.0)
        segments = clip_segments(tc, rng, t_end)
        after = with_lookalike(tc, world, segments, rng)
        assert after[1:] == segments[1:]
        (a, b) = after[0]  # stream times (s) of the synthetic video, not wall time
        assert b - a == pytest.approx(segments[0][1] - segments[0][0])
        if after == segments:
            continue
        moved += 1
        history_start, next_start = t_end - tc.history_seconds, after[1][0]
        assert history_start <= a and b + 1 / 2 <= next_start  # within the history, a frame (2 fps) before the next
        assert keys(world, a, b) & keys(world, *after[-1])
    assert moved >= 5  # it does find look-alikes, not only leave clips alone


def test_two_stretches_on_consecutive_entries_ask_about_the_span_between():
    """on_consecutive_entries: the first two stretches move, whole, onto two entries more than a stretch apart
    with none logged between them, in order, apart, within the history, before the last; and the clip's
    questions then include counts and orders whose span runs over the gap."""
    cfg = load_config(overrides={"train": {"segments": 3, "history_seconds": 1200.0}})
    tc, rng, moved, across = cfg.train, random.Random(0), 0, 0
    for seed in range(40):
        world = SynthWorld(seed=seed)
        t_end = rng.uniform(tc.history_seconds, 1800.0)
        start = t_end - tc.history_seconds + 100  # three stretches as clip_segments lays them
        segments = [(start, start + 15.5), (start + 16, start + 31.5), (t_end - 15.5, t_end)]
        after = on_consecutive_entries(tc, world, segments, rng)
        assert after[2:] == segments[2:] and [b - a for a, b in after] == pytest.approx([15.5] * 3)
        if after == segments:
            continue
        moved += 1
        (a0, b0), (a1, b1) = after[:2]  # stream times (s) of the synthetic video, not wall time
        assert t_end - tc.history_seconds <= a0 and b0 + 1 / 2 <= a1 and b1 + 1 / 2 <= after[2][0]
        first, second = [[e for e in world.events_between(a, b) if e.kind == "enter"] for a, b in after[:2]]
        between = [e for e in world.events_between(first[-1].t + 1e-6, second[0].t) if e.kind == "enter"]
        assert first and second and not between and second[0].t - first[-1].t > 15.5
        qs = make_questions(world, t_end, rng, n=24, kinds=("count", "order"), max_age=t_end - a0, shown=after)
        across += sum(q.evidence_time[0] < b0 and q.evidence_time[1] > a1 for q in qs)
    assert moved >= 20 and across >= 20


def test_stretches_on_counted_entries_show_every_entry_their_count_question_counts():
    """on_counted_entries: the stretches before the last move onto every entry a count of 2 or more counts,
    in order, apart, within the history, before the last; the question's answer is the log's count over its
    window, whose ends are clear of entries."""
    cfg = load_config(overrides={"train": {"segments": 3, "history_seconds": 1200.0}})
    tc, rng, asked, answers = cfg.train, random.Random(0), 0, set()
    for seed in range(30):
        world = SynthWorld(seed=seed)
        t_end = rng.uniform(tc.history_seconds, 1800.0)
        start = t_end - tc.history_seconds + 100
        segments = [(start, start + 15.5), (start + 16, start + 31.5), (t_end - 15.5, t_end)]
        after, q = on_counted_entries(tc, world, segments, rng)
        if q is None:
            assert after == segments
            continue
        asked += 1
        assert after[-1] == segments[-1] and 2 <= len(after) <= 3 and [b - a for a, b in after] == pytest.approx([15.5] * len(after))
        # stream times (s) of the synthetic video: stretch bounds and event times, not wall time
        assert t_end - tc.history_seconds <= after[0][0] and all(b + 1 / 2 <= n[0] for (_, b), n in zip(after, after[1:]))
        a, b = q.evidence_time
        enters = [e for e in world.events_between(a, b) if e.kind == "enter"]
        counted = [e for e in enters if e.t in q.cues]
        assert q.text.startswith("How many") and q.answer == str(len(counted)) and len(counted) >= 2
        assert all(any(s <= e.t and e.t + e.duration <= t for s, t in after[:-1]) for e in counted)
        assert not [e for e in world.events_between(a - 1.5, a + 1.5) if e.kind == "enter"]
        answers.add(q.answer)
    assert asked >= 15 and len(answers) >= 2, (asked, answers)


def test_training_prompts_show_busy_cubes_before_quiet_ones():
    """Beside the evidence and the newest, a prompt shows cubes where something happens before any quiet one."""
    torch.manual_seed(0)
    spans = [(2.0 * i, 2.0 * i + 1.5, None) for i in range(20)]
    busy = [i % 3 == 0 for i in range(20)]
    q = Question("When did a red circle last enter?", "t=20s", "when", (20.0, 21.0), "last_1m", 60.0, 20.0)
    for _ in range(50):
        shown = shown_cubes(spans, q, 2, busy)
        assert 10 in shown
        rest = [i for i in shown if i not in (10, 18, 19)]
        if any(not busy[i] for i in rest):
            assert all(i in shown for i in range(20) if busy[i])


def test_pointer_targets_are_the_shown_cubes_where_the_answer_is_seen():
    """A time answer points at the cube whose start it will write; any other answer's targets are the cubes
    holding the first frame (2 fps) after each of its cues, none for a cue the prompt does not show."""
    cubes = [(2.0 * i, 2.0 * i + 1.5, None) for i in range(10)]  # cube i holds the frames at 2i, 2i + .5, .., 2i + 1.5
    count = Question("How many objects entered between t=3s and t=19s?", "3", "count", (3.0, 19.0), "last_1m", 30.0,
                     cues=(4.2, 9.9, 18.0))
    assert answer_target(count, cubes) == ("3", [2, 5, 9])  # 9.9 is first seen at 10.0, in the cube after its own
    assert answer_target(count, cubes[:5]) == ("3", [2])  # 9.9 and 18 not shown
    view = Question("How many objects are in view?", "1", "count", (30.0, 30.0), "last_10s", 30.0)
    assert answer_target(view, cubes) == ("1", None)  # no cues: no pointer term
    when = Question("When did a red circle last enter?", "t=10s", "when", (9.9, 11.0), "last_1m", 30.0, 9.9, (9.9,))
    assert answer_target(when, cubes) == (POINTER, [5])


def test_absent_windows_hold_nothing_the_answer_rests_on():
    """The pointer's "none" prompts: runs of consecutive cubes, MIN_SHOWN to the longest asked, with neither
    the answer's pointer targets nor its cues' cubes; none for a question without cues, or no room."""
    torch.manual_seed(0)
    cubes = [(2.0 * i, 2.0 * i + 1.5, None) for i in range(30)]
    count = Question("How many objects entered between t=3s and t=37s?", "2", "count", (3.0, 37.0), "last_1m", 60.0,
                     cues=(9.9, 33.1))  # first seen (at 10, 33.5) in cubes 5 and 16
    when = Question("When did a red circle last enter?", "t=31s", "when", (30.6, 32.0), "last_1m", 60.0, 30.6, (30.6,))
    for q, rests_on in ((count, {5, 16}), (when, {15})):  # 30.6: nearest start is 30 (cube 15), first seen in 15
        seen = set()
        for _ in range(100):
            w = absent_window(q, cubes, longest=8)
            assert MIN_SHOWN <= len(w) <= 8 and w == list(range(w[0], w[-1] + 1)) and not rests_on & set(w), (q, w)
            seen |= set(w)
        assert seen == set(range(30)) - rests_on  # every stretch between them is drawn from
    view = Question("How many objects are in view?", "1", "count", (60.0, 60.0), "last_10s", 60.0)
    assert absent_window(view, cubes, 8) is None
    assert absent_window(count, cubes[3:8], 8) is None  # cube 5 leaves runs of 2: too short

def test_when_rows_point_at_the_events_shown_and_at_none_for_descriptions_not_shown():
    """The pointer's "when" rows for a clip: questions whose latest event the stretches show whole (its cube),
    and about descriptions of which they show no event ("none"), those of a kind shown first; never one whose
    latest event is unseen but an earlier look-alike shown."""
    world = SynthWorld(seed=8)
    segments = [(300.0, 360.0), (500.0, 560.0), (840.0, 900.0)]
    shown, unshown = when_rows(world, 900.0, segments, random.Random(0))
    begun = [e for e in world.events_between(300.0, 900.5) if e.kind in WHEN_KINDS
             and any(a <= e.t <= b + 0.5 for a, b in segments)]
    assert len(shown) >= 3 and len(unshown) > 10
    latest = {q.text: q for q in when_questions(world, 900.0)}
    for q in shown:
        assert any(a <= q.evidence_time[0] and q.evidence_time[1] <= b + 0.5 for a, b in segments) and latest[q.text] == q
    keys = {when_key(e) for e in begun}
    kind_of = lambda q: "change" if " turn " in q.text else q.text.split()[-1].rstrip("?")
    for q in unshown:
        (e,) = [e for e in world.events_until(900.0) if e.t == q.answer_time]
        assert when_key(e) not in keys and not any(a <= q.answer_time <= b for a, b in segments)
    ranks = [kind_of(q) in {e.kind for e in begun} for q in unshown]
    assert ranks == sorted(ranks, reverse=True) and any(ranks) and not all(ranks)
    left_out = set(latest) - {q.text for q in shown + unshown}
    assert left_out
    for text in left_out:  # an earlier look-alike shown, or the latest shown in part
        q = latest[text]
        assert any(when_key(e) == when_key(next(x for x in world.events_until(900.0) if x.t == q.answer_time))
                   for e in begun), text


def test_training_prompts_always_show_the_cubes_of_the_cues():
    """However small the random budget, a count's prompt shows every entry it counts (and the newest), and
    "what entered next" the next entry, however far from the time the question names."""
    torch.manual_seed(0)
    spans = [(2.0 * i, 2.0 * i + 1.5, None) for i in range(40)]
    count = Question("How many objects entered between t=3s and t=37s?", "3", "count", (3.0, 37.0), "last_1m", 80.0,
                     cues=(4.2, 20.0, 33.1))
    after = Question("What entered next after the red bar that entered at t=4s?", "blue cross", "order", (4.2, 71.0),
                     "last_1m", 80.0, cues=(4.2, 70.0))
    for _ in range(50):
        assert {2, 10, 16, 38, 39} <= set(shown_cubes(spans, count, 2, [False] * 40))  # 33.1 is first seen at 33.5
        assert {2, 35} <= set(shown_cubes(spans, after, 2, [False] * 40))

def test_clip_events_are_the_logged_events_each_frame_first_shows():
    """The cube probe's event targets: a frame is labelled with exactly the "when"-nameable events of the log
    that began in the half second before it, by the key a question names them with, none begun in a gap."""
    cfg = load_config(overrides={"train": {"segments": 3, "history_seconds": 600.0}})
    rng, labelled = random.Random(1), 0
    for _ in range(8):
        worlds = {}
        clip = sample_clip(cfg, rng, (0, 50), worlds)
        (world,) = worlds.values()
        for i in range(1, len(clip.times)):
            a, b = clip.times[i - 1], clip.times[i]
            begun = [e for e in world.events_between(max(a, b - 0.5) + 1e-9, b + 1e-9) if e.kind in WHEN_KINDS]
            assert {EVENT_KEYS[k] for k in clip.events[i].nonzero().flatten().tolist()} == {when_key(e) for e in begun}
            labelled += len(begun)
        assert not clip.events[0].any()
    assert labelled >= 10


def test_which_event_loss_makes_the_keys_of_a_kind_compete():
    """Where an enter begins in a cube, the loss is the cross-entropy of its key among the enter keys: low when
    it leads them, high when another enter key does (though both are "present" to a per-key BCE), and blind
    to the other kinds' keys; cubes without an event of a kind add nothing."""
    enters = [i for i, k in enumerate(EVENT_KEYS) if k[0] == "enter"]
    red_circle, blue_bar = EVENT_KEYS.index(("enter", "red", "circle")), EVENT_KEYS.index(("enter", "blue", "bar"))
    begun = torch.zeros(2, len(EVENT_KEYS))
    begun[0, red_circle] = 1.0  # cube 1: nothing begun
    right, wrong = torch.zeros(2, len(EVENT_KEYS)), torch.zeros(2, len(EVENT_KEYS))
    right[0, red_circle], right[0, blue_bar] = 8.0, 4.0
    wrong[0, red_circle], wrong[0, blue_bar] = 4.0, 8.0
    assert which_event_loss(right, begun) < 0.1 < 3.0 < which_event_loss(wrong, begun)
    leave = EVENT_KEYS.index(("leave", "red", "circle"))
    other_kinds, nothing_begun = right.clone(), right.clone()
    other_kinds[0, leave] = 20.0
    nothing_begun[1] = torch.randn(len(EVENT_KEYS)) * 10
    assert torch.allclose(which_event_loss(other_kinds, begun), which_event_loss(right, begun))
    assert torch.allclose(which_event_loss(nothing_begun, begun), which_event_loss(right, begun))
    # two enters in one cube: either may lead; uniform logits give log(#keys / #begun)
    begun[0, blue_bar] = 1.0
    assert torch.isclose(which_event_loss(torch.zeros_like(begun), begun), torch.tensor(math.log(len(enters) / 2)))
    assert which_event_loss(torch.zeros(3, len(EVENT_KEYS)), torch.zeros(3, len(EVENT_KEYS))) == 0


def test_a_clip_warms_its_scan_on_the_frames_just_before_it():
    """A clip carries the train.warmup_seconds of frames before its first, at the live frame rate; before the
    world's start, its first frame held (as a live stream's scan is primed); its scan starts from the state
    after them."""
    cfg = load_config(overrides={"train": {"warmup_seconds": 10.0, "world_seconds": 60.0, "clip_seconds": 16.0}})
    rng, clips, held = random.Random(2), [], 0
    for _ in range(6):
        worlds = {}
        clips.append(sample_clip(cfg, rng, (0, 50), worlds))
        (world,) = worlds.values()
        c = clips[-1]
        assert len(c.warmup) == 20
        for k in range(1, 21):
            assert torch.equal(c.warmup[20 - k], torch.as_tensor(world.frame_at(max(0.0, c.times[0] - k / 2))))
        held += c.times[0] < 10.0
    assert 0 < held < len(clips)
    torch.manual_seed(0)
    encoder = CubeEncoder(cfg)
    for c, state in zip(clips, warm_states(encoder, clips)):
        (alone,) = encoder.temporal_state(c.warmup[None])
        assert all(torch.allclose(a.ssm, b.ssm, atol=1e-6) for a, b in zip(state, alone))


def test_live_memories_add_each_cut_under_a_tight_budget_where_it_merges():
    cfg = load_config("default")
    encoder, _ = load_model(cfg)
    plain = live_memories(cfg, encoder, range(1), 300.0, cuts=2, progress=False)
    both = live_memories(cfg, encoder, range(1), 300.0, cuts=2, tight_budget=4 * 24, progress=False)
    assert [len(e) for _, e in plain] == [len(e) for _, e in both[::2]]  # the profile's budget never merged here
    assert all(e.level == 0 for _, m in plain for e in m)
    assert len(both) == 4  # 24 entries hold 150 s of cubes of about 3.5 s only after merging
    for (_, wide), (_, tight) in zip(both[::2], both[1::2]):
        assert sum(e.tokens.shape[0] for e in tight) <= 4 * 24 < sum(e.tokens.shape[0] for e in wide)
        assert any(e.level for e in tight) and (tight[0].start, tight[-1].end) == (wide[0].start, wide[-1].end)
        assert sum(e.num_frames for e in tight) == sum(e.num_frames for e in wide)

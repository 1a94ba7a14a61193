"""The EventLocator's features say what a leave and an enter look like in a memory's sequence of entries,
and a checkpoint carries a fitted locator through save and load unchanged."""
import torch

from configs import load_config
from models.checkpoint import checkpoint_dir, load_model, save_checkpoint
from models.synthetic.event_locator import LOGIT_SCALE, NOT_THERE, EventLocator, LocatorEnsemble
from models.synthetic.vocabulary import ATTRIBUTES, EVENT_KEYS
from models.synthetic.fit import fit_locator, live_memories
from models.synthetic.probes import CubeProbe, load_probes

IN, OUT = 10.0, -10.0  # probe logits: in view, out of view


def locator_reading_logits_directly() -> EventLocator:
    """Tokens [N, 1, A + E] are the probe's logits themselves."""
    n = len(ATTRIBUTES) + len(EVENT_KEYS)
    loc = EventLocator(token_dim=n, width=8)
    with torch.no_grad():
        loc.probe.weight.copy_(torch.eye(n)), loc.probe.bias.zero_()
    return loc


def test_features_mark_an_objects_last_entry_in_view_and_its_entry():
    loc = locator_reading_logits_directly()
    tokens = torch.full((6, 1, len(ATTRIBUTES) + len(EVENT_KEYS)), OUT)
    red_bar = ATTRIBUTES.index(("red", "bar"))
    tokens[1:4, 0, red_bar] = IN  # in view at the ends of entries 1-3
    feats = loc.features(tokens, ages=torch.arange(6.0).flip(0))
    leave, enter = EVENT_KEYS.index(("leave", "red", "bar")), EVENT_KEYS.index(("enter", "red", "bar"))
    before, here, after, later = (feats[:, leave, i] for i in range(4))
    s_in, s_out = IN / LOGIT_SCALE, OUT / LOGIT_SCALE
    assert here.tolist() == [s_out, s_in, s_in, s_in, s_out, s_out]
    assert before[0] == NOT_THERE and after[-1] == NOT_THERE and later[-1] == NOT_THERE
    # entry 3 is the last in view: nowhere later; entry 1 is where it came into view
    assert later[3] == s_out and later[2] == s_in
    assert feats[1, enter, 0] == s_out and feats[1, enter, 1] == s_in
    # a change to red reads any red object; the other shapes' keys see nothing
    assert torch.equal(feats[:, EVENT_KEYS.index(("change", "red")), 1], here)
    assert (feats[:, EVENT_KEYS.index(("leave", "blue", "bar")), 1] == s_out).all()


def test_scores_one_per_entry_and_checkpoint_round_trip(tmp_path):
    cfg = load_config("default")
    encoder, llm = load_model(cfg)
    torch.manual_seed(0)
    width = llm.lm.get_input_embeddings().embedding_dim
    llm.readers.locator = LocatorEnsemble([EventLocator(cfg.resampler.out_dim, width) for _ in range(2)]).eval()
    tokens = torch.randn(9, 8, cfg.resampler.out_dim)
    question = llm.embed_text("When did a red bar last leave?").detach()
    ages = torch.linspace(80, 0, 9)
    scores = llm.readers.locator(tokens, ages, question)
    assert scores.shape == (9,)
    one, two = (f(tokens, ages, question).log_softmax(0) for f in llm.readers.locator.fits)
    assert torch.allclose(scores, (one + two) / 2)  # the fits' log-softmax over entries, averaged
    save_checkpoint(tmp_path, encoder, llm)
    _, reloaded = load_model(cfg, tmp_path)
    assert reloaded.readers.locator is not None and len(reloaded.readers.locator.fits) == 2
    assert torch.equal(reloaded.readers.locator(tokens, ages, question), scores)
    # a lone locator, as older checkpoints saved it, loads as an ensemble of one
    lone = llm.readers.locator.fits[0]
    llm.readers.locator = lone
    save_checkpoint(tmp_path, encoder, llm)
    _, older = load_model(cfg, tmp_path)
    assert len(older.readers.locator.fits) == 1 and torch.allclose(older.readers.locator(tokens, ages, question), one)


def test_a_fit_lowers_the_loss_and_fine_tunes_its_own_copy_of_the_probe():
    cfg = load_config("default")
    encoder, llm = load_model(cfg)
    probe = CubeProbe(cfg.resampler.out_dim)
    assert load_probes(checkpoint_dir(cfg), probe, None)
    kept = {k: v.clone() for k, v in probe.state_dict().items()}
    memories = live_memories(cfg, encoder, range(2), 600.0, cuts=2, progress=False)
    first = fit_locator(cfg, llm, probe, memories, steps=30, fits=1, progress=False)
    frozen = fit_locator(cfg, llm, probe, memories, steps=300, probe_lr=0.0, fits=1, progress=False)
    assert torch.equal(llm.readers.locator.fits[0].probe.weight, probe.head.weight)
    last = fit_locator(cfg, llm, probe, memories, steps=1500, fits=2, progress=False)
    assert first["questions"] == last["questions"] >= 20
    assert last["loss"] < 0.7 * first["loss"], (first, last)
    a, b = llm.readers.locator.fits
    assert not torch.equal(a.question.weight, b.question.weight)  # two seeds, two fits
    assert not torch.equal(a.probe.weight, probe.head.weight)  # its copy learnt ...
    assert all(torch.equal(v, probe.state_dict()[k]) for k, v in kept.items())  # ... the checkpoint's probe did not
    assert frozen["questions"] == first["questions"]

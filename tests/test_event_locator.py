"""The EventLocator's features say what a leave and an enter look like in a memory's sequence of entries,
and a checkpoint carries a fitted locator through save and load unchanged."""
import torch

from configs import load_config
from models.checkpoint import load_model, save_checkpoint
from models.event_locator import ATTRIBUTES, EVENT_KEYS, LOGIT_SCALE, NOT_THERE, EventLocator

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
    llm.locator = EventLocator(cfg.resampler.out_dim, llm.lm.get_input_embeddings().embedding_dim).eval()
    tokens = torch.randn(9, 8, cfg.resampler.out_dim)
    question = llm.embed_text("When did a red bar last leave?").detach()
    scores = llm.locator(tokens, torch.linspace(80, 0, 9), question)
    assert scores.shape == (9,)
    save_checkpoint(tmp_path, encoder, llm)
    _, reloaded = load_model(cfg, tmp_path)
    assert reloaded.locator is not None
    assert torch.equal(reloaded.locator(tokens, torch.linspace(80, 0, 9), question), scores)

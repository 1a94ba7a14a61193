"""Training: a few steps lower the loss; checkpoints reload to identical outputs; resume continues."""
import random

import pytest
import torch

from configs import load_config
from models.checkpoint import load_model
from models.train import losses, sample_clip, train

TINY = {"train": {"steps": 12, "clips_per_step": 2, "questions_per_clip": 3, "clip_seconds": 16.0,
                  "eval_every": 1000, "save_every": 6, "world_seconds": 300.0, "lr": 3e-3},
        "llm": {"num_layers": 2}}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    cfg = load_config(overrides=TINY)
    out = tmp_path_factory.mktemp("run")
    train(cfg, out, progress=False)
    return cfg, out


def held_out_loss(cfg, encoder, llm):
    torch.manual_seed(0)
    rng = random.Random(99)
    clips = [sample_clip(cfg, rng, (50_000, 50_100), {}) for _ in range(4)]
    with torch.no_grad():
        return float(losses(cfg, encoder.eval(), llm.eval(), clips, noise=0.0)["qa"])


def test_a_short_run_lowers_the_loss(trained):
    cfg, out = trained
    from models.cube_encoder import CubeEncoder
    from models.llm import CubeLLM
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


def test_resume_is_deterministic(tmp_path):
    """Training 4 steps, stopping, and resuming to 6 gives the weights of 6 steps straight."""
    cfg = load_config(overrides={**TINY, "train": {**TINY["train"], "steps": 6, "save_every": 4}})
    train(cfg, tmp_path / "straight", progress=False)
    cut = load_config(overrides={**TINY, "train": {**TINY["train"], "steps": 6, "save_every": 4, "max_minutes": 1e-9}})
    train(cut, tmp_path / "resumed", progress=False)  # stops (and saves) after its first step
    train(cfg, tmp_path / "resumed", resume=True, progress=False)
    a, _ = load_model(cfg, tmp_path / "straight")
    b, _ = load_model(cfg, tmp_path / "resumed")
    for (k, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.allclose(x, y, atol=1e-6), k

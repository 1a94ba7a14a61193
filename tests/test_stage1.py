"""Stage-1 training: only the streaming modules move and the loss falls (in process); on Ray Train, two CPU
workers with gloo run, checkpoint, resume exactly, and the trained modules load into the profile and run in
the live path."""
import copy
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from actors.benchmark import profile_methods, replay
from actors.train_ray import Stage1Settings, base_model, batch_indices, clip_sample, train_stage1
from actors.worker import load_models
from configs import load_config
from models.checkpoint import STAGE1_WEIGHTS, load_stage1
from models.cubing import noise_weight
from models.stage1 import Stage1Model
from stream.datasets import load_dataset
from stream.synth_export import export_synth


@pytest.fixture(scope="module")
def llava(tmp_path_factory):
    root = tmp_path_factory.mktemp("llava")
    export_synth(root, "llava", videos=2, seconds=16.0, questions=3, first_seed=5)
    return root


def test_a_few_steps_lower_the_loss_and_move_only_the_streaming_modules(llava):
    torch.manual_seed(0)
    cfg = load_config()
    encoder, llm = base_model(cfg, None)
    model = Stage1Model(cfg, encoder, llm)
    before = copy.deepcopy(model.state_dict())
    batch = [clip_sample(q, 2.0, 8.0) for q in load_dataset(llava, "llava").items[:3]]
    assert all(s.times[0] == 7.5 and s.times[-1] == 15.5 and len(s.times) == 17 for s in batch)  # 8 s to the end
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=1e-3)
    losses = []
    for _ in range(6):
        parts = model(batch, 0.0)
        losses.append(float(parts["total"].detach()))
        opt.zero_grad()
        parts["total"].backward()
        opt.step()
    assert losses[-1] < losses[0]
    trained = model.trained_state()
    assert trained and all(k.startswith(("encoder.temporal.", "encoder.cubing.", "encoder.resampler.", "projector."))
                           for k in trained)
    after = model.state_dict()
    moved = {k for k in after if not torch.equal(after[k], before[k])}
    assert moved and all(k.startswith(Stage1Model.TRAINED + ("llm.projector.",)) for k in moved)
    assert not any(k.startswith(("encoder.vision.", "llm.lm.")) for k in moved)


def test_batches_cover_the_data_and_differ_by_rank():
    a = [batch_indices(10, step, 0, 2, 1, 0) for step in range(5)]
    b = [batch_indices(10, step, 1, 2, 1, 0) for step in range(5)]
    assert sorted(i for x in a + b for i in x) == list(range(10))  # one epoch: every record once
    assert batch_indices(10, 3, 1, 2, 1, 0) == b[3] != a[3]  # fixed by (seed, step, rank): a resumed run sees the same
    assert noise_weight(0, 10, 0.6) == pytest.approx(1.0) and noise_weight(6, 10, 0.6) == pytest.approx(0.01)


def test_settings_refuse_an_unknown_strategy():
    with pytest.raises(ValueError, match="strategy must be one of ddp, fsdp"):
        Stage1Settings(dataset="d", format="llava", strategy="zero")


def test_ray_train_two_cpu_workers_checkpoint_resume_and_live_path(llava, tmp_path):
    import ray

    cfg = load_config()
    settings = Stage1Settings(dataset=str(llava), format="llava", steps=4, batch_size=1, lr=1e-3, save_every=2,
                              clip_seconds=8.0)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        full = train_stage1(cfg, settings, str(tmp_path / "store"), "full", workers=2)
        checkpoints = sorted(c.path for c, _ in full.best_checkpoints)
        assert len(checkpoints) == 2 and full.metrics["step"] == 4  # at steps 2 and 4
        assert full.metrics["samples_per_s"] > 0 and "lm" in full.metrics and "rate" in full.metrics
        # a new run from step 2's checkpoint makes the same steps 3 and 4
        resumed = train_stage1(cfg, settings, str(tmp_path / "store"), "resumed", workers=2, resume_from=checkpoints[0])
        assert resumed.metrics["step"] == 4 and len(resumed.best_checkpoints) == 1
    finally:
        ray.shutdown()
    a = load_file(str(Path(full.checkpoint.path) / STAGE1_WEIGHTS))
    b = load_file(str(Path(resumed.checkpoint.path) / STAGE1_WEIGHTS))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert resumed.metrics["fixed_loss"] == full.metrics["fixed_loss"]

    # the checkpoint reloads to the outputs the trainer had, and moved the modules from the profile's
    encoder, llm = base_model(cfg, None)
    model = Stage1Model(cfg, encoder, llm)
    untrained = model.trained_state()
    load_stage1(encoder, llm, full.checkpoint.path)
    assert any(not torch.equal(untrained[k], a[k]) for k in a)
    fixed = [clip_sample(q, cfg.sampler.fps, settings.clip_seconds) for q in load_dataset(llava, "llava").items[:2]]
    model.eval()
    with torch.no_grad():
        assert float(model(fixed, 0.0)["total"]) == pytest.approx(full.metrics["fixed_loss"], rel=1e-5)

    # a profile naming it (`stage1:`) loads it where the runtime loads its models
    runtime_encoder, runtime_llm = load_models(load_config(overrides={"stage1": full.checkpoint.path}))
    assert all(torch.equal(v, runtime_encoder.state_dict()[k.removeprefix("encoder.")]) for k, v in a.items()
               if k.startswith("encoder."))
    assert all(torch.equal(v, runtime_llm.projector.state_dict()[k.removeprefix("projector.")]) for k, v in a.items()
               if k.startswith("projector."))
    with pytest.raises(FileNotFoundError, match="not a stage-1 checkpoint"):
        load_stage1(encoder, llm, tmp_path)

    # and run in the live path: a benchmark replay through the encoder worker with the trained modules
    ovo = tmp_path / "ovo"
    export_synth(ovo, "ovo", videos=1, seconds=16.0, questions=2, first_seed=9)
    res = replay(load_dataset(ovo, "ovo"), profile_methods(cfg, encoder, llm), cfg, log=lambda *_: None)
    assert res["methods"]["adaptive"]["questions"] >= 1 and not res["problems"]
    assert any(a["entries"] > 0 for a in res["answers"])

"""Stage 1 for the `vlm` profile with a tiny random Qwen2.5-VL: its temporal encoder, cubing head and resampler
train on the VLM's LM loss (the VLM frozen), what is trained is what the live stream encoder runs, and on Ray
Train two CPU workers train it into a checkpoint that the profile loads (`stage1:`) and replays a benchmark
with."""
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from actors.benchmark import profile_methods, replay
from actors.train_ray import Stage1Settings, batch_indices, build_stage1, clip_sample, noise_seed, train_stage1
from configs import load_config
from models.checkpoint import STAGE1_WEIGHTS, read_stage1
from models.cubing import noise_weight
from models.vlm import VLMError
from models.vlm.profile import build_stream_encoder
from stream.datasets import load_dataset
from stream.synth_export import export_synth
from tiny_vlm import save_tiny_qwen2_5_vl


@pytest.fixture(scope="module")
def qwen(tmp_path_factory):
    return save_tiny_qwen2_5_vl(tmp_path_factory.mktemp("tiny-qwen2.5-vl"))


@pytest.fixture(scope="module")
def llava(tmp_path_factory):
    root = tmp_path_factory.mktemp("llava")
    export_synth(root, "llava", videos=2, seconds=8.0, questions=2, first_seed=3)
    return root


def vlm_cfg(path, boundaries="change", resampler="pool", grid=(1, 2, 2), **top):
    return load_config("vlm", overrides={"model": {
        "vlm": str(path), "dtype": "float32", "device": "cpu", "max_pixels": 112 * 112, "cube_grid": list(grid),
        "min_frames": 2, "max_frames": 4, "temporal_layers": 1, "boundaries": boundaries, "resampler": resampler},
        "cubing": {"target_len": 2.5, "trained_target_len": 2.5}} | top)


def test_an_untrained_resampler_is_the_pooling_bit_for_bit(qwen, llava):
    """`model.resampler: attention` before stage 1 gives the cubes of `pool`, exactly: a VLM sees what it saw."""
    sample = clip_sample(load_dataset(llava, "llava").items[0], 2.0, 8.0)
    cubes = {}
    for resampler in ("pool", "attention"):
        encoder = build_stream_encoder(vlm_cfg(qwen, resampler=resampler, grid=(2, 2, 2)), "cpu")
        assert (encoder.resampler is None) == (resampler == "pool")
        encoder.add_stream("s")
        out = [c for f, t in zip(sample.frames, sample.times) for c in encoder.push(["s"], [f.numpy()], [t])]
        cubes[resampler] = out + [encoder.flush("s")]
    assert len(cubes["pool"]) > 1
    assert [c.num_frames for c in cubes["pool"]] == [c.num_frames for c in cubes["attention"]]
    assert all(torch.equal(a.tokens, b.tokens) for a, b in zip(cubes["pool"], cubes["attention"]))
    # untrained, it is built the same in every process: a restarted encoder worker resumes the streams' states
    again = build_stream_encoder(vlm_cfg(qwen, resampler="attention", grid=(2, 2, 2)), "cpu")
    assert again.fingerprint() == encoder.fingerprint()


@pytest.mark.parametrize("boundaries,resampler", [("change", "pool"), ("head", "attention")])
def test_the_streaming_modules_learn_and_run_as_trained_in_the_live_encoder(qwen, llava, tmp_path, boundaries,
                                                                            resampler):
    torch.manual_seed(0)
    cfg = vlm_cfg(qwen, boundaries, resampler)
    settings = Stage1Settings(dataset=str(llava), format="llava")
    model = build_stage1(cfg, settings)
    assert [n for n, p in model.named_parameters() if p.requires_grad] == [n for n, _ in model.named_parameters()]
    trained = {n.split(".")[0] for n, _ in model.named_parameters()}  # the VLM is not trained
    assert trained == {"temporal"} | ({"head"} if boundaries == "head" else set()) | \
        ({"resampler"} if resampler == "attention" else set())
    frozen = {k: v.clone() for k, v in model.language.model.state_dict().items()}
    batch = [clip_sample(q, 2.0, 8.0) for q in load_dataset(llava, "llava").items[:2]]
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for step in range(5):
        parts = model(batch, 1.0 - step / 5)
        assert ("rate" in parts) == (boundaries == "head")
        loss = parts["total"]
        losses.append(float(loss.detach()))
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert losses[-1] < losses[0]
    assert all(torch.equal(v, model.language.model.state_dict()[k]) for k, v in frozen.items())
    if resampler == "attention":  # its output map started at zero (the pooling): trained, it adds to the pooling
        assert model.resampler.out.weight.abs().sum() > 0

    # the trained encoder in the profile's live stream encoder cuts and pools (or resamples) the clip as training did
    (tmp_path / "ckpt").mkdir()
    save_file(model.trained_state(), str(tmp_path / "ckpt" / STAGE1_WEIGHTS))
    live = build_stream_encoder(vlm_cfg(qwen, boundaries, resampler, stage1=str(tmp_path / "ckpt")), "cpu")
    for part in ("temporal", "head", "resampler"):
        ours, theirs = getattr(model, part), getattr(live, part)
        assert (ours is None) == (theirs is None)
        if ours is not None:
            assert all(torch.equal(v, theirs.state_dict()[k]) for k, v in ours.state_dict().items())
    sample = batch[0]
    with torch.no_grad():
        trained, _ = model.cubes(sample)
    live.add_stream("s")
    cubes = []
    for frame, t in zip(sample.frames, sample.times):
        cubes += live.push(["s"], [frame.numpy()], [t])
    state = live.get_state("s")
    assert ("cubing" in state) == (boundaries == "head")
    restored = build_stream_encoder(vlm_cfg(qwen, boundaries, resampler, stage1=str(tmp_path / "ckpt")), "cpu")
    restored.set_state("s", state)  # a worker's saved state (the head's with it) resumes the stream as it was
    cubes.append(live.flush("s"))
    assert torch.equal(restored.flush("s").tokens, cubes[-1].tokens)
    assert [(c.start, c.end) for c in cubes] == [(c.start, c.end) for c in trained]
    for c, v in zip(cubes, trained):
        torch.testing.assert_close(c.tokens, v.tokens.reshape(-1, v.tokens.shape[-1]), rtol=1e-4, atol=1e-5)

    no_temporal = vlm_cfg(qwen, boundaries, resampler, stage1=str(tmp_path / "ckpt"))
    no_temporal.model.temporal_layers = 0
    with pytest.raises(VLMError, match="temporal_layers"):  # a checkpoint for an encoder the profile does not run
        build_stream_encoder(no_temporal, "cpu")
    if boundaries == "head":
        with pytest.raises(VLMError, match="stage-1 checkpoint"):  # an untrained head would cut at random
            build_stream_encoder(vlm_cfg(qwen, "head"), "cpu")
        with pytest.raises(VLMError, match="boundaries"):  # a trained head the profile would not run
            build_stream_encoder(vlm_cfg(qwen, "change", resampler, stage1=str(tmp_path / "ckpt")), "cpu")
    if resampler == "attention":
        # a trained resampler the profile would not run
        with pytest.raises(VLMError, match="model.resampler: attention"):
            build_stream_encoder(vlm_cfg(qwen, boundaries, "pool", stage1=str(tmp_path / "ckpt")), "cpu")
        with pytest.raises(VLMError, match="do not fit"):  # trained for another cube grid: other queries
            build_stream_encoder(vlm_cfg(qwen, boundaries, "attention", grid=(2, 2, 2), stage1=str(tmp_path / "ckpt")),
                                 "cpu")
    else:
        with pytest.raises(VLMError, match="holds no encoder.resampler"):  # a checkpoint without one
            build_stream_encoder(vlm_cfg(qwen, boundaries, "attention", stage1=str(tmp_path / "ckpt")), "cpu")


def test_ray_train_the_vlm_profile_with_fsdp_resume_and_replay_with_its_checkpoint(qwen, llava, tmp_path):
    """Two gloo workers train the temporal encoder, head and resampler with FSDP (the VLM sharded too): a step is
    the data-parallel step DDP makes, a run resumes exactly, and the checkpoint runs in the live path."""
    import ray

    cfg = vlm_cfg(qwen, "head", "attention")
    settings = Stage1Settings(dataset=str(llava), format="llava", steps=2, batch_size=1, lr=3e-3, save_every=1,
                              clip_seconds=8.0, strategy="fsdp")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        fsdp = train_stage1(cfg, settings, str(tmp_path / "store"), "fsdp", workers=2)
        first = sorted(c.path for c, _ in fsdp.best_checkpoints)[0]  # step 1's
        resumed = train_stage1(cfg, settings, str(tmp_path / "store"), "resumed", workers=2, resume_from=first)
    finally:
        ray.shutdown()
    assert fsdp.metrics["step"] == resumed.metrics["step"] == 2 and fsdp.metrics["lm"] > 0
    state = read_stage1(fsdp.checkpoint.path)  # the trained modules alone, gathered whole from the shards
    assert {k.split(".")[1] for k in state} == {"temporal", "cubing", "resampler"}
    # the out projections start at zero (the identity, the pooling): trained, they moved
    assert any(k.startswith("encoder.temporal.") and k.endswith("out_proj.weight") and v.abs().sum() > 0
               for k, v in state.items())
    assert state["encoder.resampler.out.weight"].abs().sum() > 0
    # resuming from step 1's checkpoint makes the same step 2 exactly
    again = read_stage1(resumed.checkpoint.path)
    assert again.keys() == state.keys() and all(torch.equal(again[k], v) for k, v in state.items())
    assert resumed.metrics["fixed_loss"] == fsdp.metrics["fixed_loss"]

    # FSDP is the same training as DDP: its first step is the step DDP makes, computed here in one process (each
    # rank's batch and noise, their gradients averaged as DDP's all-reduce averages them), to float rounding
    torch.manual_seed(settings.seed)
    model = build_stage1(cfg, settings)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=settings.lr, weight_decay=settings.weight_decay)
    items = load_dataset(llava, "llava").items
    losses = []
    for rank in range(2):
        batch = [clip_sample(items[i], cfg.sampler.fps, settings.clip_seconds)
                 for i in batch_indices(len(items), 0, rank, 2, settings.batch_size, settings.seed)]
        torch.manual_seed(noise_seed(settings.seed, 0, rank, 2))
        losses.append(model(batch, noise_weight(0, settings.steps, settings.noise_anneal))["total"])
    (sum(losses) / 2).backward()
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    opt.step()
    after_one = read_stage1(first)
    assert after_one["encoder.resampler.out.weight"].abs().sum() > 0  # the step moved it from zero
    reference = model.trained_state()
    assert reference.keys() == after_one.keys()
    for k, v in reference.items():
        torch.testing.assert_close(after_one[k], v, rtol=1e-4, atol=1e-6)

    methods = profile_methods(vlm_cfg(qwen, "head", "attention", stage1=str(Path(fsdp.checkpoint.path))))
    encoder = methods[0].encoder
    live = {f"encoder.{part}.{k}": v for part, module in (("temporal", encoder.temporal), ("cubing", encoder.head),
                                                            ("resampler", encoder.resampler))
            for k, v in module.state_dict().items()}
    assert live.keys() == state.keys() and all(torch.equal(v, live[k]) for k, v in state.items())
    ovo = tmp_path / "ovo"
    export_synth(ovo, "ovo", videos=1, seconds=12.0, questions=2, first_seed=9)
    res = replay(load_dataset(ovo, "ovo"), methods, cfg, log=lambda *_: None)
    assert set(res["methods"]) == {"adaptive", "recent-frames"} and not res["problems"]
    assert res["methods"]["adaptive"]["questions"] >= 1 and res["methods"]["adaptive"]["refused"] == 0
    assert any(a["entries"] > 0 for a in res["answers"])

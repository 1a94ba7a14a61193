"""The parts a profile with `model.vlm` runs: the vision side's stream encoder for the encoder actors and the
language side's answerer for the LLM actors, each loading only its half of the VLM."""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import replace

import torch

from configs import Config, ConfigError
from models.cubing import GumbelCubing
from models.temporal import MambaTemporalEncoder
from models.vlm import VLMError, load_vlm
from models.vlm.answerer import VLMAnswerer
from models.vlm.resampler import PooledCubeResampler
from models.vlm.stream_encoder import VLMStreamEncoder


def build_stream_encoder(cfg: Config, device: str) -> VLMStreamEncoder:
    """device: where the actor runs ("cuda" where it was given a GPU), unless `model.device` names one."""
    m = cfg.model
    device = device if m.device == "auto" else m.device
    vision = load_vlm(m.vlm, "vision", dtype=m.dtype, device=device, max_pixels=m.max_pixels)
    return VLMStreamEncoder(vision, tuple(m.cube_grid), m.min_frames, m.max_frames, temporal_encoder(cfg, vision.width),
                            device, cubing_head(cfg, vision.width), cube_resampler(cfg, vision.width))


def build_answerer(cfg: Config, device: str) -> VLMAnswerer:
    m = cfg.model
    language = load_vlm(m.vlm, "language", dtype=m.dtype, device=device if m.device == "auto" else m.device)
    return VLMAnswerer(language, cfg.answer, m.cube_grid)


def temporal_encoder(cfg: Config, width: int) -> MambaTemporalEncoder | None:
    """The Mamba blocks over pooled frames (`model.temporal_layers`): the identity, or trained by stage 1 where the
    profile names a checkpoint (`stage1:`, models/vlm/stage1.py)."""
    m = cfg.model
    if not m.temporal_layers:
        _unused(cfg, "encoder.temporal.", "model.temporal_layers as it was trained")
        return None
    with _seeded(cfg):
        layers = type(cfg.temporal)(**vars(cfg.temporal) | {"n_layers": m.temporal_layers})
        temporal = MambaTemporalEncoder(width, layers, identity=True)
    if cfg.stage1:
        _load_part(temporal, cfg, "encoder.temporal.", "model.temporal_layers")
    return temporal


def cubing_head(cfg: Config, width: int, trained: bool = True) -> GumbelCubing | None:
    """The Gumbel cubing head where `model.boundaries` is "head", with the cube lengths of `model.min_frames` /
    `max_frames` and the rest of `cubing:`; its weights from the `stage1:` checkpoint (`trained`: required there,
    as an untrained head cuts at random; stage 1 itself starts from a fresh one)."""
    m = cfg.model
    if m.boundaries != "head":
        _unused(cfg, "encoder.cubing.", "model.boundaries: head")
        return None
    try:
        rule = replace(cfg.cubing, min_len=m.min_frames, max_len=m.max_frames, event_max_len=None)
    except ConfigError as e:
        raise VLMError(f"model.boundaries head: {e}") from e
    with _seeded(cfg):
        head = GumbelCubing(width, rule)
    if cfg.stage1:
        _load_part(head, cfg, "encoder.cubing.", "model.boundaries: head")
    elif trained:
        raise VLMError("model.boundaries head needs a stage-1 checkpoint that trained it (stage1:)")
    return head


def cube_resampler(cfg: Config, width: int) -> PooledCubeResampler | None:
    """The attention resampler over each closed cube's pooling where `model.resampler` is "attention": the pooling
    itself until trained, its weights from the `stage1:` checkpoint where the profile names one."""
    m = cfg.model
    if m.resampler != "attention":
        _unused(cfg, "encoder.resampler.", "model.resampler: attention")
        return None
    with _seeded(cfg):
        resampler = PooledCubeResampler(width, tuple(m.cube_grid))
    if cfg.stage1:
        _load_part(resampler, cfg, "encoder.resampler.", "model.resampler: attention")
    return resampler


@contextmanager
def _seeded(cfg: Config):
    """A module built under the profile's seed: untrained (the identity, the pooling), it is the same in every
    process, so a stream state one encoder worker saved resumes in another (the fingerprint hashes its weights)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        yield


def _unused(cfg: Config, prefix: str, setting: str) -> None:
    """A stage-1 checkpoint whose trained module this profile would not run is refused (set `setting`)."""
    from models.checkpoint import read_stage1, under_configs

    if cfg.stage1 and any(k.startswith(prefix) for k in read_stage1(under_configs(cfg.stage1))):
        raise VLMError(f"stage1: {cfg.stage1} trained {prefix}* weights this profile would not run: set {setting}")


def _load_part(module, cfg: Config, prefix: str, setting: str) -> None:
    """The `stage1:` checkpoint's `prefix`* weights into `module`: all of them, each of the module's shape."""
    from models.checkpoint import read_stage1, under_configs

    part = {k.removeprefix(prefix): v for k, v in read_stage1(under_configs(cfg.stage1)).items() if k.startswith(prefix)}
    if not part:
        raise VLMError(f"stage1: {cfg.stage1} holds no {prefix}* weights: it was not trained with {setting} as set here")
    try:
        module.load_state_dict(part)
    except RuntimeError as e:  # other layers or widths: trained for another VLM or other settings
        raise VLMError(f"stage1: {cfg.stage1}'s {prefix}* weights do not fit this profile ({setting}, model.vlm, "
                       f"model.cube_grid as trained): {e}") from e

"""The parts a profile with `model.vlm` runs: the vision side's stream encoder for the encoder actors and the
language side's answerer for the LLM actors, each loading only its half of the VLM."""
from __future__ import annotations

from configs import Config
from models.temporal import MambaTemporalEncoder
from models.vlm import VLMError, load_vlm
from models.vlm.answerer import VLMAnswerer
from models.vlm.stream_encoder import VLMStreamEncoder


def build_stream_encoder(cfg: Config, device: str) -> VLMStreamEncoder:
    """device: where the actor runs ("cuda" where it was given a GPU), unless `model.device` names one."""
    m = cfg.model
    device = device if m.device == "auto" else m.device
    vision = load_vlm(m.vlm, "vision", dtype=m.dtype, device=device, max_pixels=m.max_pixels)
    return VLMStreamEncoder(vision, tuple(m.cube_grid), m.min_frames, m.max_frames, temporal_encoder(cfg, vision.width),
                            device)


def temporal_encoder(cfg: Config, width: int) -> MambaTemporalEncoder | None:
    """The Mamba blocks over pooled frames (`model.temporal_layers`): the identity, or trained by stage 1 where the
    profile names a checkpoint (`stage1:`, models/vlm/stage1.py)."""
    m = cfg.model
    if not m.temporal_layers:
        if cfg.stage1:
            raise VLMError("stage1: a VLM's stage-1 checkpoint trains the temporal encoder: set model.temporal_layers "
                           "as it was trained")
        return None
    temporal = MambaTemporalEncoder(width, type(cfg.temporal)(**vars(cfg.temporal) | {"n_layers": m.temporal_layers}),
                                    identity=True)
    if cfg.stage1:
        from models.checkpoint import read_stage1, under_configs
        from models.vlm.stage1 import load_temporal

        load_temporal(temporal, read_stage1(under_configs(cfg.stage1)))
    return temporal


def build_answerer(cfg: Config, device: str) -> VLMAnswerer:
    m = cfg.model
    language = load_vlm(m.vlm, "language", dtype=m.dtype, device=device if m.device == "auto" else m.device)
    return VLMAnswerer(language, cfg.answer, m.cube_grid)

"""The parts a profile with `model.vlm` runs: the vision side's stream encoder for the encoder actors and the
language side's answerer for the LLM actors, each loading only its half of the VLM."""
from __future__ import annotations

from configs import Config
from models.temporal import MambaTemporalEncoder
from models.vlm import load_vlm
from models.vlm.answerer import VLMAnswerer
from models.vlm.stream_encoder import VLMStreamEncoder


def build_stream_encoder(cfg: Config, device: str) -> VLMStreamEncoder:
    """device: where the actor runs ("cuda" where it was given a GPU), unless `model.device` names one."""
    m = cfg.model
    device = device if m.device == "auto" else m.device
    vision = load_vlm(m.vlm, "vision", dtype=m.dtype, device=device, max_pixels=m.max_pixels)
    temporal = None
    if m.temporal_layers:
        temporal = MambaTemporalEncoder(vision.width, type(cfg.temporal)(**vars(cfg.temporal) | {"n_layers": m.temporal_layers}),
                                        identity=True)
    return VLMStreamEncoder(vision, tuple(m.cube_grid), m.min_frames, m.max_frames, temporal, device)


def build_answerer(cfg: Config, device: str) -> VLMAnswerer:
    m = cfg.model
    language = load_vlm(m.vlm, "language", dtype=m.dtype, device=device if m.device == "auto" else m.device)
    return VLMAnswerer(language, cfg.answer, m.cube_grid)

"""A trained model on disk: `model.safetensors` (cube encoder, projector, time embedding, pointer, and the
weights of the profile's readers plug-in where fitted) and `llm/` (a Hugging Face causal LM with its tokenizer,
as `save_pretrained` writes it), so the LLM half opens in any HF tool."""
from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast

from configs import PROFILES, Config
from models.cube_encoder import CubeEncoder
from models.llm import CubeLLM
from models.readers import readers_class


def checkpoint_dir(cfg: Config) -> Path | None:
    return under_configs(cfg.checkpoint) if cfg.checkpoint else None


def under_configs(path: str | Path) -> Path:
    """A folder a profile names: absolute, or relative to configs/."""
    path = Path(path)
    return path if path.is_absolute() else Path(str(PROFILES)) / path


def save_checkpoint(path: str | Path, encoder: CubeEncoder, llm: CubeLLM) -> None:
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tensors = {f"encoder.{k}": v for k, v in encoder.state_dict().items()}
    tensors |= {f"projector.{k}": v for k, v in llm.projector.state_dict().items()}
    tensors |= {f"time_embed.{k}": v for k, v in llm.time_embed.state_dict().items()}
    tensors |= {f"pointer.{k}": v for k, v in llm.pointer.state_dict().items()}
    if llm.readers is not None:
        tensors |= llm.readers.state_dict()
    save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(path / "model.safetensors"))
    llm.lm.save_pretrained(path / "llm")
    llm.tokenizer.save_pretrained(path / "llm")


STAGE1_WEIGHTS = "stage1.safetensors"  # a stage-1 checkpoint's trained modules, keyed as in model.safetensors
STAGE1_PARTS = ("encoder.temporal.", "encoder.cubing.", "encoder.resampler.", "projector.")


def read_stage1(path: str | Path) -> dict[str, torch.Tensor]:
    """The trained modules of a stage-1 checkpoint folder (`cubestream train-stage1`)."""
    file = Path(path) / STAGE1_WEIGHTS
    if not file.is_file():
        raise FileNotFoundError(f"no {STAGE1_WEIGHTS} in {path}: not a stage-1 checkpoint")
    return load_file(str(file))


def load_stage1(encoder: CubeEncoder, llm: CubeLLM, path: str | Path) -> None:
    """Lay a stage-1 checkpoint folder's trained modules (`models/stage1.py`) over the profile's encoder and LLM."""
    apply_stage1(encoder, llm, read_stage1(path))


def apply_stage1(encoder: CubeEncoder, llm: CubeLLM, state: dict[str, torch.Tensor]) -> None:
    """Stage-1 weights over an encoder and LLM; every tensor must fit (weights trained for another model are an error)."""
    if stray := sorted(k for k in state if not k.startswith(STAGE1_PARTS)):
        raise ValueError(f"not stage-1 weights: {', '.join(stray[:5])}")
    encoder.load_state_dict(encoder.state_dict() | {k.removeprefix("encoder."): v for k, v in state.items()
                                                    if k.startswith("encoder.")})
    if proj := {k.removeprefix("projector."): v for k, v in state.items() if k.startswith("projector.")}:
        llm.projector.load_state_dict(proj)


def load_encoder(cfg: Config) -> CubeEncoder:
    """The profile's cube encoder: trained weights when it names a checkpoint, else a fresh seeded one."""
    if cfg.checkpoint:
        return load_model(cfg)[0]
    torch.manual_seed(cfg.seed)
    return CubeEncoder(cfg).eval()


def load_model(cfg: Config, path: str | Path | None = None) -> tuple[CubeEncoder, CubeLLM]:
    """The encoder and LLM of `cfg`, with the weights of `path` (default: the profile's checkpoint)."""
    path = Path(path) if path else checkpoint_dir(cfg)
    if path is None or not (path / "model.safetensors").is_file():
        raise FileNotFoundError(f"no trained checkpoint at {path} (run `cubestream train`, or set `checkpoint:`)")
    lm = AutoModelForCausalLM.from_pretrained(path / "llm", attn_implementation="eager")
    # our tokenizer.json by its own class: AutoTokenizer would pick the LM family's tokenizer class instead
    llm = CubeLLM(cfg, tokenizer=PreTrainedTokenizerFast.from_pretrained(path / "llm"), lm=lm)
    encoder = CubeEncoder(cfg)
    tensors = load_file(str(path / "model.safetensors"))
    encoder.load_state_dict({k.removeprefix("encoder."): v for k, v in tensors.items() if k.startswith("encoder.")})
    llm.projector.load_state_dict({k.removeprefix("projector."): v for k, v in tensors.items() if k.startswith("projector.")})
    if time := {k.removeprefix("time_embed."): v for k, v in tensors.items() if k.startswith("time_embed.")}:
        llm.time_embed.load_state_dict(time)  # absent from older checkpoints: it stays zero, as they were trained
    if pointer := {k.removeprefix("pointer."): v for k, v in tensors.items() if k.startswith("pointer.")}:
        # absent from older checkpoints, whose LLM never answers POINTER; its newer terms keep their zero start
        llm.pointer.load_state_dict(llm.pointer.state_dict() | pointer)
    if cfg.llm.readers:  # None where the checkpoint holds no fitted weights of them
        llm.readers = readers_class(cfg.llm.readers).from_checkpoint(tensors, cfg, llm, path)
    return encoder.eval(), llm.eval()

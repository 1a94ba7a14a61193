"""Pretrained Hugging Face VLMs behind cubestream: one file per family, loaded by id or local path.

    vision = load_vlm("Qwen/Qwen2.5-VL-3B-Instruct", "vision")      # on an encoder actor
    language = load_vlm("Qwen/Qwen2.5-VL-3B-Instruct", "language")  # on an LLM actor

Every failure a user can cause (an id that is neither a folder nor reachable nor cached, a folder that is
no Hugging Face model, a text-only model, a VLM family not supported) is a `VLMError` naming the model,
raised here: at start-up, never at the first question.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from models.vlm import qwen2_5_vl, qwen3_vl, smolvlm
from models.vlm.base import LanguageSide, Prompt, VisionSide, VisualCube, VLMError

__all__ = ["load_vlm", "family_of", "FAMILIES", "VLMError", "VisionSide", "LanguageSide", "Prompt", "VisualCube"]


@dataclass(frozen=True)
class Family:
    vision: type[VisionSide]
    language: type[LanguageSide]
    drop_vision: Callable  # frees the vision tower (and connector) of a loaded model
    drop_language: Callable  # frees the decoder and LM head


FAMILIES = {
    "qwen2_5_vl": Family(qwen2_5_vl.Qwen2_5_VLVision, qwen2_5_vl.Qwen2_5_VLLanguage,
                         qwen2_5_vl.drop_vision, qwen2_5_vl.drop_language),
    # Qwen3-VL's parts have Qwen2.5-VL's names; its vision side adds the deepstack features
    "qwen3_vl": Family(qwen3_vl.Qwen3VLVision, qwen3_vl.Qwen3VLLanguage, qwen2_5_vl.drop_vision,
                       qwen2_5_vl.drop_language),
    "smolvlm": Family(smolvlm.SmolVLMVision, smolvlm.SmolVLMLanguage, smolvlm.drop_vision, smolvlm.drop_language),
    # SmolVLM's classes derive from Idefics3's: the same parts under the same names
    "idefics3": Family(smolvlm.SmolVLMVision, smolvlm.SmolVLMLanguage, smolvlm.drop_vision, smolvlm.drop_language),
}
# Families whose path differs enough to need their own file (not written yet), said plainly at start-up.
NOT_YET = {"llava_onevision": "LLaVA-OneVision's video path (its pooling and newline token) is not wired yet",
           "qwen3_vl_moe": "Qwen3-VL-MoE is not wired yet (dense Qwen3-VL is)"}


def family_of(source: str) -> tuple[str, object]:
    """(model_type, config) of the model at `source` (a local folder or a hub id), or a VLMError that says why not."""
    from transformers import AutoConfig

    path = Path(source).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise VLMError(f"model.vlm: {source} holds no config.json: not a Hugging Face model folder")
        source = str(path)
    try:
        config = AutoConfig.from_pretrained(source)
    except (OSError, ValueError) as e:
        if path.exists():
            raise VLMError(f"model.vlm: cannot read the config at {source}: {e}") from None
        raise VLMError(
            f"model.vlm: cannot load {source!r}: it is not a local folder, and the Hugging Face hub is unreachable "
            f"(offline?) with no cached copy of it ({str(e).splitlines()[0]}). Download it where the hub is "
            f"reachable (`huggingface-cli download {source}`) or give a local path.") from None
    kind = config.model_type
    if kind in FAMILIES:
        return kind, config
    if kind in NOT_YET:
        raise VLMError(f"model.vlm: {source} is a {kind} model, not supported yet: {NOT_YET[kind]}; "
                       f"supported families: {', '.join(FAMILIES)}")
    if not hasattr(config, "vision_config"):
        raise VLMError(f"model.vlm: {source} is a {kind} model without a vision tower, not a VLM; "
                       f"supported families: {', '.join(FAMILIES)}")
    raise VLMError(f"model.vlm: {source} is a {kind} model, an unsupported VLM family; "
                   f"supported families: {', '.join(FAMILIES)}")


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    if dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[dtype]


def load_vlm(source: str, part: str, dtype: str = "auto", device: str = "auto",
             max_pixels: int | None = None) -> VisionSide | LanguageSide:
    """The vision side (`part="vision"`) or the language side (`"language"`) of the VLM at `source`."""
    from transformers import AutoImageProcessor, AutoModelForImageTextToText, AutoTokenizer

    if part not in ("vision", "language"):
        raise ValueError(f"part is 'vision' or 'language', got {part!r}")
    kind, _ = family_of(source)
    family = FAMILIES[kind]
    source = str(Path(source).expanduser()) if Path(source).expanduser().exists() else source
    dev = resolve_device(device)
    model = AutoModelForImageTextToText.from_pretrained(source, dtype=resolve_dtype(dtype, dev))
    if part == "vision":
        family.drop_language(model)
        model = model.to(dev).eval()
        return family.vision(model, AutoImageProcessor.from_pretrained(source), max_pixels)
    family.drop_vision(model)
    model = model.to(dev).eval()
    tokenizer = AutoTokenizer.from_pretrained(source)
    if tokenizer.chat_template is None:
        tokenizer.chat_template = _processor_chat_template(source)
    eos = model.generation_config.eos_token_id
    eos = eos if isinstance(eos, list) else [eos] if eos is not None else [tokenizer.eos_token_id]
    return family.language(model, tokenizer, eos)


def _processor_chat_template(source: str) -> str:
    """The chat template a checkpoint keeps beside its processor (chat_template.jinja or .json), where its
    tokenizer has none."""
    from transformers.utils import cached_file

    for name in ("chat_template.jinja", "chat_template.json"):
        found = cached_file(source, name, _raise_exceptions_for_missing_entries=False)
        if found:
            text = Path(found).read_text()
            return json.loads(text)["chat_template"] if name.endswith(".json") else text
    raise VLMError(f"model.vlm: {source} has no chat template (neither its tokenizer nor a chat_template file)")

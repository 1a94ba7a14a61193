"""Tiny random Hugging Face VLMs of the real classes, saved with their processors, for tests and bench.

No model can be downloaded here, so each family is built from a small config of its real class, with a
byte-level BPE tokenizer (any text, no unknown words) carrying the family's special tokens and chat
template, and the family's own image processor at small sizes; `save_pretrained` writes model, tokenizer and image
processor to a folder that loads back by path as a downloaded checkpoint does.

`reference_processor` builds the family's own processor (tokenizer + image processor) around them for the
parity tests. transformers 5.25 refuses to build a Qwen2.5-VL, Qwen3-VL or SmolVLM processor without a video
processor, and its video processors need torchvision, which has no CPU build for this torch here: the
processors are built with the argument check skipped, their video side absent (only images are used).
"""
from __future__ import annotations

from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

CORPUS = ["what colour was the thing that came in at the door", "is anyone at the door right now",
          "a person walked in and sat down", "the red car left the street", "yes no maybe one two three",
          "how many people are there", "describe what happened in the last minute"] * 4

QWEN_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}{% for c in message['content'] %}"
    "{% if c['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif c['type'] == 'video' %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% else %}{{ c['text'] }}{% endif %}{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")

SMOL_TEMPLATE = (
    "<|im_start|>{% for message in messages %}{{ message['role'] | capitalize }}"
    "{% if message['content'][0]['type'] == 'image' %}{{ ':' }}{% else %}{{ ': ' }}{% endif %}"
    "{% for c in message['content'] %}{% if c['type'] == 'text' %}{{ c['text'] }}{% elif c['type'] == 'image' %}"
    "{{ '<image>' }}{% endif %}{% endfor %}<end_of_utterance>\n{% endfor %}"
    "{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}")


def tiny_tokenizer(special: list[str], template: str, eos: str, pad: str) -> PreTrainedTokenizerFast:
    """A byte-level BPE over CORPUS (about 300 tokens) with `special` tokens added whole."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(CORPUS, trainers.BpeTrainer(vocab_size=320, special_tokens=special, show_progress=False,
                                                        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=eos, pad_token=pad, chat_template=template,
                                   additional_special_tokens=[s for s in special if s not in (eos, pad)])


# Qwen2.5-VL-3B-Instruct's sizes (its config.json), for benchmarks at a real size with random weights.
QWEN2_5_VL_3B = {"text": dict(hidden_size=2048, intermediate_size=11008, num_hidden_layers=36, num_attention_heads=16,
                              num_key_value_heads=2, rope_parameters={"rope_type": "default", "rope_theta": 1e6,
                                                                      "mrope_section": [16, 24, 24]}),
                 "vision": dict(depth=32, hidden_size=1280, intermediate_size=3420, num_heads=16, out_hidden_size=2048,
                                window_size=112, fullatt_block_indexes=[7, 15, 23, 31])}


def save_tiny_qwen2_5_vl(path: Path, seed: int = 0, sizes: dict | None = None, dtype=torch.float32) -> Path:
    """sizes: {"text": {...}, "vision": {...}} config values over the tiny ones (e.g. QWEN2_5_VL_3B)."""
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration, Qwen2VLImageProcessorPil

    special = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
               "<|image_pad|>", "<|video_pad|>"]
    tok = tiny_tokenizer(special, QWEN_TEMPLATE, eos="<|im_end|>", pad="<|endoftext|>")
    ids = {s: tok.convert_tokens_to_ids(s) for s in special}
    sizes = sizes or {}
    cfg = Qwen2_5_VLConfig(
        text_config=dict(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=32768,
                         rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3]},
                         bos_token_id=ids["<|endoftext|>"], eos_token_id=ids["<|im_end|>"],
                         pad_token_id=ids["<|endoftext|>"]) | sizes.get("text", {}),
        vision_config=dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=32,
                           patch_size=14, spatial_merge_size=2, temporal_patch_size=2, window_size=56,
                           fullatt_block_indexes=[1], tokens_per_second=2) | sizes.get("vision", {}),
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"])
    torch.manual_seed(seed)
    model = Qwen2_5_VLForConditionalGeneration(cfg).to(dtype).eval()
    size = {"shortest_edge": 56 * 56, "longest_edge": 112 * 112}
    model.save_pretrained(path)
    tok.save_pretrained(path)
    Qwen2VLImageProcessorPil(size=size, patch_size=14, merge_size=2, temporal_patch_size=2).save_pretrained(path)
    model.generation_config.save_pretrained(path)
    return Path(path)


def save_tiny_qwen3_vl(path: Path, seed: int = 0) -> Path:
    from transformers import Qwen2VLImageProcessorPil, Qwen3VLConfig, Qwen3VLForConditionalGeneration

    special = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
               "<|image_pad|>", "<|video_pad|>"]
    tok = tiny_tokenizer(special, QWEN_TEMPLATE, eos="<|im_end|>", pad="<|endoftext|>")
    ids = {s: tok.convert_tokens_to_ids(s) for s in special}
    cfg = Qwen3VLConfig(
        text_config=dict(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=1, head_dim=16, max_position_embeddings=32768,
                         rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3],
                                          "mrope_interleaved": True},
                         bos_token_id=ids["<|endoftext|>"], eos_token_id=ids["<|im_end|>"],
                         pad_token_id=ids["<|endoftext|>"]),
        vision_config=dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=32,
                           patch_size=16, spatial_merge_size=2, temporal_patch_size=2, num_position_embeddings=16,
                           deepstack_visual_indexes=[0, 1]),
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"])
    torch.manual_seed(seed)
    model = Qwen3VLForConditionalGeneration(cfg).eval()
    model.save_pretrained(path)
    tok.save_pretrained(path)
    Qwen2VLImageProcessorPil(size={"shortest_edge": 64 * 64, "longest_edge": 128 * 128}, patch_size=16, merge_size=2,
                             temporal_patch_size=2).save_pretrained(path)
    model.generation_config.save_pretrained(path)
    return Path(path)


def save_tiny_smolvlm(path: Path, seed: int = 0, kind: str = "smolvlm") -> Path:
    """SmolVLM, or (kind "idefics3") Idefics3, whose classes SmolVLM's derive from."""
    import transformers

    prefix = {"smolvlm": "SmolVLM", "idefics3": "Idefics3"}[kind]
    special = ["<|endoftext|>", "<|im_start|>", "<end_of_utterance>", "<fake_token_around_image>", "<image>",
               "<global-img>"] + [f"<row_{r}_col_{c}>" for r in range(1, 7) for c in range(1, 7)]
    tok = tiny_tokenizer(special, SMOL_TEMPLATE, eos="<end_of_utterance>", pad="<|endoftext|>")
    ids = {s: tok.convert_tokens_to_ids(s) for s in special}
    cfg = getattr(transformers, f"{prefix}Config")(
        text_config=dict(model_type="llama", vocab_size=len(tok), hidden_size=64, intermediate_size=64,
                         num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1,
                         max_position_embeddings=4096, bos_token_id=ids["<|im_start|>"],
                         eos_token_id=ids["<end_of_utterance>"], pad_token_id=ids["<|endoftext|>"]),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                           image_size=64, patch_size=8),
        scale_factor=2, image_token_id=ids["<image>"])
    torch.manual_seed(seed)
    model = getattr(transformers, f"{prefix}ForConditionalGeneration")(cfg).eval()
    model.save_pretrained(path)
    tok.save_pretrained(path)
    getattr(transformers, f"{prefix}ImageProcessorPil")(size={"longest_edge": 64}, max_image_size={"longest_edge": 64},
                                                       do_image_splitting=False).save_pretrained(path)
    model.generation_config.save_pretrained(path)
    return Path(path)


def save_tiny_idefics3(path: Path, seed: int = 0) -> Path:
    return save_tiny_smolvlm(path, seed, kind="idefics3")


FAMILIES = {"qwen2_5_vl": save_tiny_qwen2_5_vl, "qwen3_vl": save_tiny_qwen3_vl, "smolvlm": save_tiny_smolvlm, "idefics3": save_tiny_idefics3}


def reference_processor(path: Path):
    """The family's own processor (e.g. Qwen2_5_VLProcessor) over the tokenizer and image processor saved at `path`."""
    from unittest import mock

    from transformers import (AutoConfig, AutoImageProcessor, AutoTokenizer, Idefics3Processor, ProcessorMixin,
                              Qwen2_5_VLProcessor, Qwen3VLProcessor, SmolVLMProcessor)

    kind = AutoConfig.from_pretrained(path).model_type
    tok, images = AutoTokenizer.from_pretrained(path), AutoImageProcessor.from_pretrained(path)
    if kind == "idefics3":  # no video side: built as it is
        return Idefics3Processor(image_processor=images, tokenizer=tok, image_seq_len=16, chat_template=tok.chat_template)
    cls = {"qwen2_5_vl": Qwen2_5_VLProcessor, "qwen3_vl": Qwen3VLProcessor, "smolvlm": SmolVLMProcessor}[kind]
    extra = {"image_seq_len": 16} if cls is SmolVLMProcessor else {}
    with mock.patch.object(ProcessorMixin, "check_argument_for_proper_class", lambda self, name, arg: None):
        return cls(image_processor=images, tokenizer=tok, video_processor=None, chat_template=tok.chat_template, **extra)

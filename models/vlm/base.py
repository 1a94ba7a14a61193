"""A pretrained VLM split in two: its vision side (frames -> tokens in the LLM's embedding space) and its
language side (a prompt of timed cubes and a question -> logits, answers, scores).

The encoder actors hold only the vision side (the model's own image processor, vision tower and
merger/projector); the LLM actors hold only the language side (tokenizer, chat template, decoder, LM head).
Each family (one file each, as transformers has one file per model) says where its parts are, how a
cube's tokens sit in the prompt (its placeholder tokens) and which positions they take (its own scheme:
Qwen2.5-VL's 3-D rope indices, 1-D positions for SmolVLM); everything else is shared here.

A cube enters the prompt as its time span in text followed by its tokens, where the model expects an
image's tokens: with one frame per cube and no pooling, the prompt is token for token what the model's own
processor builds for those frames, so the logits are the model's own (the parity tests check this).
"""
from __future__ import annotations

import copy
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from stream.timefmt import format_time


class VLMError(ValueError):
    """A model that cannot serve (unknown id offline, not a VLM, an unsupported family): raised at start-up."""


@dataclass
class VisualCube:
    """A span of stream time and its tokens on a (time, height, width) grid, in the LLM's embedding space."""
    start: float
    end: float
    tokens: torch.Tensor  # [T, H, W, D]


@dataclass
class Prompt:
    input_ids: torch.Tensor  # [L]; a cube's tokens sit at the model's visual placeholder ids
    embeds: torch.Tensor  # [L, D]: the text's embeddings, the cubes' tokens at their placeholders
    positions: torch.Tensor  # [R, L]: the model's position ids (R = 3 for Qwen2.5-VL's (t, h, w) rope, else 1)
    cube_spans: list[tuple[int, int]]  # each cube's visual tokens: embeds[s:e]
    question_span: tuple[int, int]  # the question's tokens
    visual_extra: torch.Tensor | None = None  # [N visual tokens, ...]: what a family feeds its decoder beside the
    #   embeddings (Qwen3-VL's deepstack features), None for most

    @property
    def next_position(self) -> int:
        """The position of the first token after the prompt: text goes on from the highest position."""
        return int(self.positions.max()) + 1


def span_text(start: float, end: float) -> str:
    """A cube's time span as the prompt writes it (times as questions and answers write them)."""
    return f"{format_time(start)} to {format_time(end)}: "


def prompt_text(spans: Sequence[tuple[float, float]], question: str, image_mark: str) -> str:
    """The user's turn before its visual placeholders are expanded: each cube's span then `image_mark`
    (what the model's chat template writes for one image), then the question."""
    return "".join(span_text(a, b) + image_mark for a, b in spans) + question


class VisionSide(ABC):
    """Frames -> per-frame tokens in the LLM's embedding space, many streams' frames in one batch."""

    width: int  # the width of the tokens it emits: the LLM's embedding width (and any extra features, Qwen3-VL)

    @abstractmethod
    def encode(self, frames: Sequence[np.ndarray]) -> list[torch.Tensor]:
        """uint8 RGB [H, W, 3] frames (sizes may differ) -> one [h, w, D] token grid per frame (float32, on the
        model's device)."""


class LanguageSide(ABC):
    """The decoder half of a VLM, fed a prompt of timed cubes and a question."""

    image_mark: str  # what the chat template writes for one image (the processor's image token string)

    def __init__(self, model, tokenizer, eos_ids: Sequence[int]):
        self.model, self.tokenizer = model, tokenizer
        self.eos_ids = list(dict.fromkeys(eos_ids))

    @property
    def device(self) -> torch.device:
        """Where the model's weights are (read each time: training with FSDP moves them after loading)."""
        return self.embedding.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.embedding.weight.dtype

    # ---- what each family says ----

    @property
    @abstractmethod
    def decoder(self) -> torch.nn.Module:
        """The text decoder: (inputs_embeds, position_ids, cache) -> last hidden states."""

    @property
    def lm_head(self) -> torch.nn.Module:
        return self.model.lm_head

    @abstractmethod
    def placeholder(self, grid: tuple[int, int, int]) -> list[int]:
        """The ids that replace a cube's one image token in the templated prompt (its tokens at the image ids)."""

    @abstractmethod
    def positions(self, input_ids: torch.Tensor, grids: list[tuple[int, int, int]]) -> torch.Tensor:
        """[R, L] position ids of a prompt whose cubes have these (t, h, w) token grids."""

    @property
    def image_token_id(self) -> int:
        return self.model.config.image_token_id

    @property
    def embedding(self) -> torch.nn.Embedding:
        return self.decoder.get_input_embeddings()

    @property
    def token_width(self) -> int:
        """The width of a cube's tokens as the vision side writes them (`split_visual` takes them apart)."""
        return self.width

    def split_visual(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """A cube's tokens [..., D'] -> (what goes into the prompt's embeddings [..., D], any extra features the
        family's decoder takes beside them). Most families' tokens are the embeddings alone."""
        return tokens, None

    def decoder_inputs(self, prompt: Prompt, length: int) -> dict:
        """The decoder's extra inputs for a pass over the prompt followed by `length - len(prompt)` more tokens."""
        return {}

    # ---- shared ----

    @property
    def width(self) -> int:
        return self.embedding.weight.shape[1]

    def ids(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def chat(self, user_text: str) -> str:
        """The model's chat template around one user turn, ready for the assistant's answer."""
        return self.tokenizer.apply_chat_template([{"role": "user", "content": [{"type": "text", "text": user_text}]}],
                                                  tokenize=False, add_generation_prompt=True)

    def prompt(self, cubes: Sequence[VisualCube], question: str) -> Prompt:
        """The prompt of `cubes` (in time order), each its span in text and its tokens, then the question."""
        marked = self.chat(prompt_text([(c.start, c.end) for c in cubes], question, self.image_mark))
        # the question's place: the text after the last cube's mark (its tokens are the question's and the template's end)
        templated = self.ids(marked)
        image = self.image_token_id
        if templated.count(image) != len(cubes):
            raise ValueError(f"the chat template wrote {templated.count(image)} image tokens for {len(cubes)} cubes")
        grids = [tuple(c.tokens.shape[:3]) for c in cubes]
        ids, spans, k = [], [], 0
        for t in templated:
            if t != image:
                ids.append(t)
                continue
            expanded = self.placeholder(grids[k])
            first = len(ids) + expanded.index(image)
            spans.append((first, first + int(np.prod(grids[k]))))
            ids += expanded
            k += 1
        q_ids = self.ids(question)
        q_end = _find_last(ids, q_ids)
        question_span = (q_end - len(q_ids), q_end) if q_end is not None else (spans[-1][1] if spans else 0, len(ids))
        input_ids = torch.tensor(ids, device=self.device)
        embeds, extra = self.embedding(input_ids), None
        if cubes:
            visual = torch.cat([c.tokens.reshape(-1, c.tokens.shape[-1]) for c in cubes]).to(self.device, self.dtype)
            visual, extra = self.split_visual(visual)
            mask = torch.zeros(len(ids), dtype=torch.bool, device=self.device)
            for s, e in spans:
                mask[s:e] = True
            embeds = embeds.masked_scatter(mask[:, None], visual)
        return Prompt(input_ids=input_ids, embeds=embeds, positions=self.positions(input_ids[None], grids),
                      cube_spans=spans, question_span=question_span, visual_extra=extra)

    def _run(self, embeds: torch.Tensor, positions: torch.Tensor, cache=None, use_cache: bool = True, **kwargs):
        # [R, L] -> the decoder's [B, L] (1-D positions) or [R, B, L] (Qwen2.5-VL's (t, h, w) rows)
        position_ids = positions if positions.shape[0] == 1 else positions[:, None]
        return self.decoder(inputs_embeds=embeds[None], position_ids=position_ids, cache=cache, use_cache=use_cache,
                            **kwargs)

    @torch.no_grad()
    def logits(self, prompt: Prompt, answer_ids: Sequence[int] = ()) -> torch.Tensor:
        """[L + len(answer_ids), V] float32 logits of the prompt followed by `answer_ids`."""
        embeds, positions = self._extend(prompt, answer_ids)
        out = self._run(embeds, positions, **self.decoder_inputs(prompt, len(embeds)))
        return self.lm_head(out.last_hidden_state[0]).float()

    def _extend(self, prompt: Prompt, answer_ids: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        if not answer_ids:
            return prompt.embeds, prompt.positions
        ids = torch.tensor(list(answer_ids), device=self.device)
        pos = (prompt.next_position + torch.arange(len(ids), device=self.device)).expand(prompt.positions.shape[0], -1)
        return torch.cat([prompt.embeds, self.embedding(ids)]), torch.cat([prompt.positions, pos], dim=1)

    @torch.no_grad()
    def generate(self, prompt: Prompt, max_new_tokens: int) -> tuple[str, list[int]]:
        """Greedy decoding from the prompt until an end-of-turn id or `max_new_tokens`: (text, generated ids)."""
        out = self._run(prompt.embeds, prompt.positions, **self.decoder_inputs(prompt, len(prompt.embeds)))
        cache, logits = out.cache, self.lm_head(out.last_hidden_state[0, -1])
        R, nxt, generated = prompt.positions.shape[0], prompt.next_position, []
        for _ in range(max_new_tokens):
            tok = int(logits.argmax())
            if tok in self.eos_ids:
                break
            generated.append(tok)
            if len(generated) == max_new_tokens:
                break
            pos = torch.full((R, 1), nxt, device=self.device)
            out = self._run(self.embedding(torch.tensor([tok], device=self.device)), pos, cache)
            cache, logits, nxt = out.cache, self.lm_head(out.last_hidden_state[0, -1]), nxt + 1
        return self.tokenizer.decode(generated, skip_special_tokens=True).strip(), generated

    @torch.no_grad()
    def option_logprobs(self, prompt: Prompt, options: Sequence[str]) -> torch.Tensor:
        """Each option's log-likelihood as the whole answer (its tokens, then the end of the turn)."""
        out = self._run(prompt.embeds, prompt.positions, **self.decoder_inputs(prompt, len(prompt.embeds)))
        first = F.log_softmax(self.lm_head(out.last_hidden_state[0, -1]).float(), -1)
        scores = []
        for o in options:
            ids = self.ids(o) + self.eos_ids[:1]
            total = first[ids[0]]
            if len(ids) > 1:
                pos = (prompt.next_position + torch.arange(len(ids) - 1, device=self.device)).expand(
                    prompt.positions.shape[0], -1)
                rest = self._run(self.embedding(torch.tensor(ids[:-1], device=self.device)), pos,
                                 copy.deepcopy(out.cache))
                lp = F.log_softmax(self.lm_head(rest.last_hidden_state[0]).float(), -1)
                total = total + lp[torch.arange(len(ids) - 1), torch.tensor(ids[1:])].sum()
            scores.append(total)
        return torch.stack(scores).cpu()

    @torch.no_grad()
    def attention_scores(self, prompt: Prompt) -> torch.Tensor:
        """XComp: the mean attention from the question's tokens to each cube's tokens (summed over the cube),
        averaged over heads and the middle half of the layers. Attention weights exist only in the eager
        implementation: the decoder runs it for this pass."""
        before = self.decoder.config._attn_implementation
        self.decoder.set_attn_implementation("eager")
        try:
            att = self._run(prompt.embeds, prompt.positions, use_cache=False, output_attentions=True,
                            **self.decoder_inputs(prompt, len(prompt.embeds))).attentions
        finally:
            self.decoder.set_attn_implementation(before)
        n = len(att)
        middle = att[n // 4: max(n // 4 + 1, 3 * n // 4)]
        q0, q1 = prompt.question_span
        a = torch.stack([x[0, :, q0:q1].float().mean(dim=(0, 1)) for x in middle]).mean(0)
        return torch.stack([a[s:e].sum() for s, e in prompt.cube_spans]).cpu()

    @torch.no_grad()
    def key_scores(self, cube_tokens: torch.Tensor, question: str) -> torch.Tensor:
        """The cheap fallback: cosine of each cube's mean token to the question's mean token embedding.
        cube_tokens [N, K, D]."""
        q = self.embedding(torch.tensor(self.ids(question), device=self.device)).float().mean(0)
        keys = self.split_visual(cube_tokens.to(self.device))[0].float().mean(1)
        return F.cosine_similarity(keys, q[None], dim=-1).cpu()


def _find_last(seq: list[int], sub: list[int]) -> int | None:
    """The end index of the last occurrence of `sub` in `seq` (the question, written after every cube); None
    where the template's context tokenized it otherwise (then all text after the last cube stands for it)."""
    for end in range(len(seq), len(sub) - 1, -1):
        if seq[end - len(sub):end] == sub:
            return end
    return None

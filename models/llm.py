"""The language side: a Hugging Face causal LM that reads cubes as embeddings between timestamps in text.

Prompt layout (XComp / Quicksviewer style), one segment a cube in time order, then the question:

    t = 1 2 s : <K projected cube tokens>  t = 1 5 s : <K tokens> ...  question : ... answer : <answer> [EOS]

Digits are single tokens, so any time can be read and written by a small vocabulary. Every time the
prompt writes (a cube's timestamp, a time the question names) also carries a `TimeEmbedding` of its
value on its tokens: matching "entered at t=178s" to the cube stamped t=177s is then one dot product of
smooth features in one attention layer, where digit strings alone need a multi-token match that a small
LLM learns slowly. It starts at zero, so a checkpoint without it (or a fresh pretrained LLM) is unchanged.

"When" is answered by pointing, not by writing digits: the answer is the token `[CUBE]`, and a
`CubePointer` picks which cube of the prompt it means; the answer text gets that cube's time. A small LLM
copies a multi-digit stamp from hundreds of tokens back badly (it scored 0% on "when"); picking a cube is
one softmax over the prompt's cubes, and the time is then written exactly.

The default LLM is tiny and trained here with a word-level tokenizer of its own; a real profile loads
any local causal LM and its tokenizer with `from_pretrained`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerFast, Qwen2Config

from configs import Config
from models.readers import MemoryReaders
from stream.timefmt import TIME_WORD, format_time

SPECIALS = {"pad_token": "[PAD]", "unk_token": "[UNK]", "eos_token": "[EOS]"}
POINTER = "[CUBE]"  # an answer token: "the time of the cube the pointer picks"


def build_tokenizer(texts: list[str]) -> PreTrainedTokenizerFast:
    """A word-level tokenizer over the words of `texts`, every digit and punctuation mark its own token."""
    pre = pre_tokenizers.Sequence([pre_tokenizers.Whitespace(), pre_tokenizers.Digits(individual_digits=True)])
    words = sorted({w for t in texts for w, _ in pre.pre_tokenize_str(t)} | set("0123456789.:=-"))
    vocab = {tok: i for i, tok in enumerate([*SPECIALS.values(), *words])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token=SPECIALS["unk_token"]))
    tok.pre_tokenizer = pre
    return PreTrainedTokenizerFast(tokenizer_object=tok, **SPECIALS)


def detokenize(pieces: list[str]) -> str:
    """Join word-level pieces: a space only between two words, so "t = 1 2 s" reads "t=12s"."""
    out = ""
    for i, p in enumerate(pieces):
        if i and out[-1:].isalpha() and p[:1].isalpha():
            out += " "
        out += p
    return out


def time_text(start: float) -> str:
    """A cube's timestamp, written as questions and answers write times (t=123s)."""
    return f"{format_time(start)} :"


class TimeEmbedding(nn.Module):
    """Seconds -> an embedding: sines and cosines of periods from 2 s to 3 h, projected (zero at start)."""

    def __init__(self, width: int, n_freq: int = 32, min_period: float = 2.0, max_period: float = 10_800.0):
        super().__init__()
        periods = torch.logspace(math.log10(min_period), math.log10(max_period), n_freq)
        self.register_buffer("freqs", 2 * math.pi / periods, persistent=False)
        self.proj = nn.Linear(2 * n_freq, width)
        nn.init.zeros_(self.proj.weight), nn.init.zeros_(self.proj.bias)

    def forward(self, seconds: float) -> torch.Tensor:  # -> [width]
        x = seconds * self.freqs
        return self.proj(torch.cat([x.sin(), x.cos()]))


@dataclass
class Prompt:
    embeds: torch.Tensor  # [L, H]
    cube_spans: list[tuple[int, int]]  # positions of each cube's K tokens
    question_span: tuple[int, int]
    cube_starts: list[float]  # each cube's start time (s): what a pointed answer writes
    now: float  # the stream time the question is asked at, which cubes' ages count from


class CubePointer(nn.Module):
    """A pointer network's attention over the prompt's cubes: a query from the hidden state that begins the
    answer (at the prompt's last position) and from the question's tokens, against each cube's mean hidden
    state, all from the LLM's last layer.

    The question's own tokens, pooled: in the tiny LLM the last position had learnt to read "When did a
    red bar last leave?" through one attention head that, for "leave", attended to that word alone, so
    the pointer's scores did not depend on the object named (its hidden state barely moved between objects)
    and a saturated softmax gives
    no gradient to unlearn it. The question's tokens carry the object by their residual stream.

    Plus a recency term: each cube's age (log seconds before the prompt's `now`) times a weight the query
    sets. "When did a red circle last enter?" over two red-circle entries is answered by their times alone,
    which a mean of hidden states carries only faintly. The question and recency terms start at zero: a
    checkpoint without them is unchanged."""

    def __init__(self, width: int, dim: int = 64):
        super().__init__()
        self.query, self.key, self.question = nn.Linear(width, dim), nn.Linear(width, dim), nn.Linear(width, dim)
        self.recency = nn.Linear(width, 1)
        for zero in (self.question, self.recency):
            nn.init.zeros_(zero.weight), nn.init.zeros_(zero.bias)

    def forward(self, hidden: torch.Tensor, prompt: Prompt) -> torch.Tensor:  # hidden [L, H] -> [n_cubes] logits
        keys = torch.stack([hidden[a:b].mean(0) for a, b in prompt.cube_spans])
        last = hidden[len(prompt.embeds) - 1]
        query = self.query(last) + self.question(hidden[slice(*prompt.question_span)].mean(0))
        ages = torch.tensor([prompt.now - t for t in prompt.cube_starts], device=hidden.device).clamp(min=0.0)
        return self.key(keys) @ query / self.key.out_features**0.5 + self.recency(last) * torch.log1p(ages)


class CubeLLM(nn.Module):
    def __init__(self, cfg: Config, tokenizer=None, lm=None):
        super().__init__()
        c = cfg.llm
        if c.pretrained and lm is None:
            lm = AutoModelForCausalLM.from_pretrained(c.pretrained, attn_implementation="eager")
            tokenizer = tokenizer or AutoTokenizer.from_pretrained(c.pretrained)
        if tokenizer is None:
            raise ValueError("CubeLLM needs a tokenizer: llm.pretrained, a checkpoint, or build_tokenizer()")
        if POINTER not in tokenizer.get_vocab():
            tokenizer.add_special_tokens({"additional_special_tokens": [POINTER]})
        if lm is None:
            lm = AutoModelForCausalLM.from_config(Qwen2Config(
                vocab_size=len(tokenizer), hidden_size=c.hidden_size, intermediate_size=c.intermediate_size,
                num_hidden_layers=c.num_layers, num_attention_heads=c.num_heads, num_key_value_heads=c.num_heads,
                max_position_embeddings=c.max_positions, tie_word_embeddings=True,
                pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id), attn_implementation="eager")
        if lm.get_input_embeddings().num_embeddings < len(tokenizer):  # a checkpoint or LM from before POINTER
            lm.resize_token_embeddings(len(tokenizer))
        self.tokenizer, self.lm = tokenizer, lm
        self.partly_trained: list[nn.Parameter] = []  # frozen matrices of which one row trains: no weight decay
        if c.frozen:
            self.lm.requires_grad_(False)
            self._train_pointer_row()
        width = lm.get_input_embeddings().embedding_dim
        # Quicksviewer's projector: cube tokens (resampler width) -> LLM embeddings.
        self.projector = nn.Sequential(nn.Linear(cfg.resampler.out_dim, width), nn.GELU(), nn.Linear(width, width))
        self.time_embed = TimeEmbedding(width)
        self.pointer = CubePointer(width)
        # a plug-in reading the whole memory (models/readers.py), set by the checkpoint loader where the profile
        # names one; absent, the pointer answers "when" and the LLM every other question
        self.readers: MemoryReaders | None = None

    def _train_pointer_row(self) -> None:
        """A frozen LM must still learn to read and write POINTER, a token it never saw: its embedding row (and
        output row, where untied) train and the rest of each matrix stays as loaded (LLaVA's new image tokens)."""
        rows = torch.zeros(len(self.tokenizer), 1)
        rows[self.tokenizer.convert_tokens_to_ids(POINTER)] = 1.0
        for weight in {id(w): w for w in (self.lm.get_input_embeddings().weight, self.lm.get_output_embeddings().weight)}.values():
            weight.requires_grad_(True)
            weight.register_hook(lambda grad: grad * rows.to(grad))
            self.partly_trained.append(weight)

    def ids(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def embed_ids(self, ids: list[int]) -> torch.Tensor:
        emb = self.lm.get_input_embeddings()
        return emb(torch.tensor(ids, dtype=torch.long, device=emb.weight.device))

    def embed_words(self, text: str) -> torch.Tensor:
        """[L, H] embeddings of `text`'s tokens alone, without the TimeEmbedding of the times it writes."""
        return self.embed_ids(self.ids(text))

    def embed_text(self, text: str) -> torch.Tensor:
        """[L, H] embeddings of `text`; the tokens of each time it writes ("t=12s") also carry its TimeEmbedding."""
        parts, at = [], 0
        for m in TIME_WORD.finditer(text):
            if text[at:m.start()].strip():
                parts.append(self.embed_ids(self.ids(text[at:m.start()])))
            parts.append(self.embed_ids(self.ids(m.group(0))) + self.time_embed(float(m.group(1))))
            at = m.end()
        if text[at:].strip() or not parts:
            parts.append(self.embed_ids(self.ids(text[at:])))
        return torch.cat(parts)

    def prompt(self, cubes: list[tuple[float, float, torch.Tensor]], question: str, now: float | None = None) -> Prompt:
        """cubes: (start, end, tokens [K, D]) in time order; `now` (default: the last cube's end) is the stream's
        newest time, which a prompt of cubes picked from a long memory does not show."""
        parts, spans, pos = [], [], 0
        projected = self.projector(torch.stack([c[2] for c in cubes])) if cubes else None
        for i, (start, end, _) in enumerate(cubes):
            head = self.embed_text(time_text(start))
            parts += [head, projected[i]]
            spans.append((pos + len(head), pos + len(head) + len(projected[i])))
            pos += len(head) + len(projected[i])
        q = self.embed_text(f"question : {question} answer :")
        parts.append(q)
        return Prompt(embeds=torch.cat(parts), cube_spans=spans, question_span=(pos, pos + len(q)),
                      cube_starts=[c[0] for c in cubes], now=now if now is not None else cubes[-1][1] if cubes else 0.0)

    def _answer_batch(self, prompts: list[Prompt], answers: list[str | None]):
        """Each prompt followed by its answer and EOS (a None answer: the prompt alone), right-padded: the LM's
        output and each row's labels (the answer's tokens where they are predicted, -100 elsewhere)."""
        seqs, labels = [], []
        for p, a in zip(prompts, answers):
            a_ids = [] if a is None else self.ids(a) + [self.tokenizer.eos_token_id]
            seqs.append(torch.cat([p.embeds, self.embed_ids(a_ids)]))
            labels.append([-100] * (len(p.embeds) - 1) + a_ids + [-100])  # label i is the token at i + 1
        L = max(len(s) for s in seqs)
        embeds = torch.stack([F.pad(s, (0, 0, 0, L - len(s))) for s in seqs])
        mask = torch.tensor([[1] * len(s) + [0] * (L - len(s)) for s in seqs], device=embeds.device)
        target = torch.tensor([lab + [-100] * (L - len(lab)) for lab in labels], device=embeds.device)
        return self.lm(inputs_embeds=embeds, attention_mask=mask, output_hidden_states=True), target

    def loss(self, prompts: list[Prompt], answers: list[str | None], pointed: list[list[int] | None] | None = None) -> torch.Tensor:
        """Cross-entropy of each answer (and its EOS) after its prompt (None: no answer, the row trains the
        pointer alone); right-padded batch. `pointed`: for each prompt, the cubes the pointer should pick (any
        of them: the log-likelihood of the set is added), [] for none of its cubes, or None for no pointer
        term. A POINTER answer's one cube is the cube it means.

        The pointer's softmax has one more choice, "none of these", its logit fixed at 0. Selection scores a
        long memory window by window and compares the logits across windows, most of which do not hold the
        answer; a softmax over one prompt's cubes alone leaves its logits free to shift together, so nothing
        trained one window's logits to mean what another's do. Against a fixed "none" they are trained to."""
        out, target = self._answer_batch(prompts, answers)
        answered = target != -100
        loss = (F.cross_entropy(out.logits[answered].float(), target[answered]) if answered.any()
                else out.logits.new_zeros(()))
        pointer = []
        for i, cubes in enumerate(pointed or []):  # one row at a time: prompts hold different numbers of cubes
            if cubes is not None:
                logits = F.pad(self.pointer(out.hidden_states[-1][i], prompts[i]).float(), (1, 0))  # [0] is "none"
                pointer.append(logits.logsumexp(0) - logits[[c + 1 for c in cubes] or [0]].logsumexp(0))
        return loss + torch.stack(pointer).mean() if pointer else loss

    @torch.no_grad()
    def option_logprobs(self, prompt: Prompt, options: list[str]) -> torch.Tensor:
        """The log-likelihood of each option (its tokens and EOS) as the whole answer to `prompt`: a question's
        answer chosen from the options it allows, as multiple-choice benchmarks score a model, rather than
        written freely (a small LM asked "the red circle or the blue bar?" may write a third object).

        The prompt runs once; its KV cache, repeated, is what every option reads (a real LLM's prompt of
        thousands of tokens would otherwise run once an option)."""
        first = self.lm(inputs_embeds=prompt.embeds[None], use_cache=True)
        ids = [self.ids(o) + [self.tokenizer.eos_token_id] for o in options]
        n, L = len(ids), max(map(len, ids))
        device = prompt.embeds.device
        tokens = torch.tensor([i + [self.tokenizer.pad_token_id] * (L - len(i)) for i in ids], device=device)
        mask = torch.tensor([[1] * len(i) + [0] * (L - len(i)) for i in ids], device=device)
        cache = first.cache
        cache.batch_repeat_interleave(n)
        rest = self.lm(input_ids=tokens, cache=cache,
                       attention_mask=torch.cat([mask.new_ones(n, len(prompt.embeds)), mask], 1))
        # token j of an option is predicted at the prompt's last position (j = 0), else at option token j - 1
        logits = torch.cat([first.logits[:, -1:].expand(n, -1, -1), rest.logits[:, :-1]], 1)
        logp = logits.float().log_softmax(-1).gather(-1, tokens[..., None])[..., 0]
        return (logp * mask).sum(1)

    @torch.no_grad()
    def generate(self, prompt: Prompt, max_new_tokens: int, point=None) -> tuple[str, int]:
        """Greedy decoding; returns the answer text and how many tokens it took. `point`: where given, what
        a POINTER answer writes (a time in seconds, from a reader of the whole memory; None: no reading), instead
        of the time of the prompt's cube the pointer picks."""
        # the prompt's hidden states come back with the tokens: a POINTER answer is resolved without a second pass
        out = self.lm.generate(inputs_embeds=prompt.embeds[None], attention_mask=torch.ones(1, len(prompt.embeds), dtype=torch.long,
                               device=prompt.embeds.device), max_new_tokens=max_new_tokens, do_sample=False,
                               pad_token_id=self.tokenizer.pad_token_id, eos_token_id=self.tokenizer.eos_token_id,
                               return_dict_in_generate=True, output_hidden_states=True)
        tokens = out.sequences[0].tolist()
        pieces = self.tokenizer.convert_ids_to_tokens(
            [i for i in tokens if i not in (self.tokenizer.eos_token_id, self.tokenizer.pad_token_id)])
        if POINTER in pieces and prompt.cube_spans:
            t = point() if point is not None else None
            if t is None:  # first step: the prompt, last layer
                t = prompt.cube_starts[int(self.pointer(out.hidden_states[0][-1][0], prompt).argmax())]
            pieces = [format_time(t) if p == POINTER else p for p in pieces]
        return detokenize(pieces), len(tokens)

    @torch.no_grad()
    def pointer_scores(self, prompt: Prompt) -> torch.Tensor:
        """The pointer's logit for each cube of the prompt: which one the question is about."""
        hidden = self.lm(inputs_embeds=prompt.embeds[None], output_hidden_states=True).hidden_states[-1][0]
        return self.pointer(hidden, prompt)

    @torch.no_grad()
    def attention_scores(self, prompt: Prompt) -> torch.Tensor:
        """XComp: mean attention from the question's tokens to each cube's tokens, over heads and middle layers."""
        att = self.lm(inputs_embeds=prompt.embeds[None], output_attentions=True).attentions  # per layer [1, h, L, L]
        n = len(att)
        middle = att[n // 4: max(n // 4 + 1, 3 * n // 4)]
        q0, q1 = prompt.question_span
        a = torch.stack([x[0, :, q0:q1].float().mean(dim=(0, 1)) for x in middle]).mean(0)  # [L]
        return torch.stack([a[s:e].sum() for s, e in prompt.cube_spans])

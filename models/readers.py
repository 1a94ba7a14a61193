"""Readers of a whole memory: an optional plug-in beside the LLM that answers some questions from every
memory entry, where the LLM reads a prompt of a few selected cubes.

A profile names its plug-in class by import path, `llm.readers: "package.module:Class"`. The checkpoint
loader builds it with `Class.from_checkpoint(tensors, cfg, llm, path)` from the tensors of `model.safetensors`
(None where the checkpoint holds none of its weights), and `save_checkpoint` writes its `state_dict()` under
the keys it names. The `Answerer` asks it two things, each switched off by the answer config:

- `read(llm, cubes, question, options)` (`answer.reader`): the whole answer (one of `options` where given)
  and the indices of the entries it rests on, or None where the question is not one it reads: the LLM answers;
- `locate(llm, cubes, question)` (`answer.locator`): one score an entry, how well it fits as the entry the
  asked event lies in (the best is the time a pointed "when" answer writes, and search adds their
  log-softmax to its ranking), or None where it locates nothing: the LLM's own `CubePointer` picks one of
  the prompt's cubes.

`cubes` are the memory's entries in time order (start, end, tokens [K, D]); `llm` is the `CubeLLM`, whose input
embeddings (`embed_words`, `embed_text`) the plug-in may read the question with. The default profile's plug-in,
`models.synthetic.readers:SyntheticReaders`, reads the synthetic world's closed vocabulary.
"""
from __future__ import annotations

import importlib
from typing import Protocol, Sequence

import torch


class MemoryReaders(Protocol):
    def read(self, llm, cubes: Sequence, question: str, options: list[str] | None) -> tuple[str, list[int]] | None: ...

    def locate(self, llm, cubes: Sequence, question: str) -> torch.Tensor | None: ...

    def state_dict(self) -> dict: ...


def readers_class(spec: str) -> type:
    """The plug-in class a profile's `llm.readers` names ("package.module:Class")."""
    module, _, name = spec.partition(":")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as e:
        raise ImportError(f"llm.readers names {spec!r}, which cannot be imported: {e}") from e

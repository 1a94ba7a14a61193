"""The default profile's readers of the whole memory (models/readers.py): the `EventLocator` ensemble, which
locates the entry a "when" answer means, and the `SequenceReader`, which answers the questions that name a
time (and "what colour is the bar?") from every entry. Both read the synthetic world's closed vocabulary of
colours and shapes; `cubestream fit-readers` fits them on a trained checkpoint (models/synthetic/fit.py).

Their weights sit in the checkpoint under `locator.` and `reader.`."""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Sequence

import torch
import torch.nn as nn

from configs import Config
from models.answerer import named_span
from models.synthetic.event_locator import EventLocator, LocatorEnsemble
from models.synthetic.sequence_reader import SequenceReader


class SyntheticReaders(nn.Module):
    def __init__(self, locator: LocatorEnsemble | None = None, reader: SequenceReader | None = None):
        super().__init__()
        self.locator, self.reader = locator, reader

    @classmethod
    def from_checkpoint(cls, tensors: dict, cfg: Config, llm, path: Path) -> SyntheticReaders | None:
        """The fitted readers among a checkpoint's `tensors`; None where it holds neither. One saved in an older
        layout than this code's is left out with a warning (the LLM answers in its place until it is refitted)."""
        dim, width = cfg.resampler.out_dim, llm.lm.get_input_embeddings().embedding_dim
        found = {}
        for name in ("locator", "reader"):
            if weights := {k.removeprefix(f"{name}."): v for k, v in tensors.items() if k.startswith(f"{name}.")}:
                if name == "locator" and not any(k.startswith("fits.") for k in weights):
                    weights = {f"fits.0.{k}": v for k, v in weights.items()}  # one locator saved alone: an ensemble of one
                module = (SequenceReader(dim, width) if name == "reader" else
                          LocatorEnsemble([EventLocator(dim, width) for _ in {k.split(".")[1] for k in weights}]))
                try:
                    module.load_state_dict(weights)
                except RuntimeError as e:
                    warnings.warn(f"{path}: the saved {name} does not fit this version ({e}); it is left out: "
                                  f"refit it with `cubestream fit-readers --checkpoint {path}`")
                    continue
                found[name] = module.eval()
        return cls(**found).eval() if found else None

    @torch.no_grad()
    def read(self, llm, cubes: Sequence, question: str, options: list[str] | None) -> tuple[str, list[int]] | None:
        if self.reader is None:
            return None
        return self.reader.read(torch.stack([c.tokens for c in cubes]), [(c.start, c.end) for c in cubes],
                                named_span(question), llm.embed_words(question),
                                [(o, llm.embed_words(o)) for o in options] if options else None)

    @torch.no_grad()
    def locate(self, llm, cubes: Sequence, question: str) -> torch.Tensor | None:
        if self.locator is None:
            return None
        ages = torch.tensor([cubes[-1].end - c.start for c in cubes])
        return self.locator(torch.stack([c.tokens for c in cubes]), ages, llm.embed_text(question))


def attached(llm) -> SyntheticReaders:
    """The `SyntheticReaders` on `llm`, set there empty where it has none (before fitting)."""
    if not isinstance(llm.readers, SyntheticReaders):
        llm.readers = SyntheticReaders()
    return llm.readers

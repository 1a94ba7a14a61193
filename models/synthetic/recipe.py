"""The synthetic world's training recipe (`models.train.Recipe`): clips of training worlds with questions
from their logs (`clips`), the training-only probes (`probes`) weighted by `train.attribute_weight`,
`train.event_object_weight` and `train.region_weight`, and QA accuracy on clips of held-out worlds."""
from __future__ import annotations

import random
from pathlib import Path

import torch
from tqdm import tqdm

from configs import Config
from models.cube_encoder import CubeEncoder
from models.llm import CubeLLM
from models.synthetic.clips import SynthClip, sample_clip, tokenizer_corpus
from models.synthetic.probes import CubeProbe, RegionProbe, fit_probes, load_probes, probe_losses, save_probes
from models.train import clip_cubes, warm_states
from stream.questions import is_correct


class SyntheticRecipe:
    def __init__(self, cfg: Config):
        self.cfg = cfg
        self.worlds: dict = {}  # the worlds drawn so far, by seed (bounded by `sample_clip`)
        self.probe: CubeProbe | None = None
        self.region_probe: RegionProbe | None = None

    def corpus(self) -> list[str]:
        return tokenizer_corpus(self.cfg)

    def sample_clip(self, rng: random.Random, seeds: tuple[int, int]) -> SynthClip:
        return sample_clip(self.cfg, rng, seeds, self.worlds)

    def start_heads(self, encoder: CubeEncoder, state: dict | None, init: Path | None, rng: random.Random,
                    progress: bool) -> list[torch.nn.Module]:
        tc = self.cfg.train
        self.probe = CubeProbe(self.cfg.resampler.out_dim) if tc.attribute_weight > 0 else None
        if self.probe is not None and state and state.get("probe"):
            self.probe.load_state_dict(state["probe"])
        self.region_probe = RegionProbe(encoder.dim) if tc.region_weight > 0 else None
        if self.region_probe is not None and state and state.get("region_probe"):
            self.region_probe.load_state_dict(state["region_probe"])
        if init and not state and not load_probes(init, self.probe, self.region_probe):
            fitted = fit_probes(self.cfg, encoder, self.probe, self.region_probe, rng, self.worlds, tc.probe_fit_steps,
                                progress)
            if fitted and progress:
                tqdm.write("probes fitted: " + " ".join(f"{k} {v:.3f}" for k, v in fitted.items()))
        return [m for m in (self.probe, self.region_probe) if m is not None]

    def head_losses(self, clip: SynthClip, out) -> dict[str, torch.Tensor]:
        return probe_losses(clip, out, self.probe, self.region_probe)

    def add_head_losses(self, total: torch.Tensor, parts: dict[str, torch.Tensor]) -> torch.Tensor:
        tc = self.cfg.train
        if self.probe is not None:
            total = total + tc.attribute_weight * (parts["attributes"] + parts["events"]
                                                   + tc.event_object_weight * parts["event_objects"])
        if self.region_probe is not None:
            total = total + tc.region_weight * parts["regions"]
        return total

    def head_state(self) -> dict:
        return {name: m.state_dict() if m is not None else None
                for name, m in (("probe", self.probe), ("region_probe", self.region_probe))}

    def save_heads(self, path: Path) -> None:
        save_probes(path, self.probe, self.region_probe)

    @torch.no_grad()
    def held_out_accuracy(self, encoder: CubeEncoder, llm: CubeLLM, n_clips: int = 20) -> float:
        """QA accuracy on clips of held-out worlds (all cubes in the prompt, greedy answers)."""
        encoder.eval(), llm.eval()
        rng = random.Random(12345)
        right = total = 0
        for _ in range(n_clips):
            clip = sample_clip(self.cfg, rng, (self.cfg.train.train_seeds, self.cfg.train.train_seeds + 500), {})
            _, cubes = clip_cubes(encoder, clip, 0.0, *warm_states(encoder, [clip]))
            for q in clip.questions:
                text, _ = llm.generate(llm.prompt(cubes, q.text, now=q.asked_at), self.cfg.answer.max_answer_tokens)
                right += is_correct(q, text)
                total += 1
        encoder.train(), llm.train()
        return right / max(total, 1)

"""The synthetic world's training-only probes: what each cube shows (`CubeProbe`: the (colour, shape) pairs in
view at its end and the events that begin in it) and which object is centred in each region of each frame
(`RegionProbe`). Dense, direct signals that teach the vision side what the world is made of, and what happens
in it, long before the LLM has learnt to read cubes. They are not part of the served model; they are saved
beside a checkpoint (`PROBES`), for a fine-tune and the readers' fit (`fit`) to start from."""
from __future__ import annotations

import math
import random
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from tqdm import tqdm

from configs import Config
from models.cube_encoder import CubeEncoder
from models.synthetic.clips import SynthClip, sample_clip
from models.synthetic.vocabulary import ATTRIBUTES, EVENT_KEYS
from models.train import warm_states
from stream.questions import WHEN_KINDS

# Most regions of a frame are empty: at full weight "nothing here" dominated the region probe's loss and the
# tower never told shapes apart.
EMPTY_REGION_WEIGHT = 0.2
# About 2 of the 30 (colour, shape) pairs are in view at once: unweighted, the attribute probe learnt to call
# every pair absent and taught the cube tokens nothing. Weighting the present ones by
# the odds against them makes both kinds of mistake cost alike.
ATTRIBUTE_POS_WEIGHT = 14.0
# A cube begins about 0.13 of the 66 (the world has 0.04 such events a second; a cube is ~3.5 s): unweighted,
# calling every event absent is nearly free. 60, well under the odds against (~500), was chosen, not tuned.
EVENT_POS_WEIGHT = 60.0
PROBES = "probes.safetensors"  # beside a checkpoint: its fitted training-only probes, for a fine-tune to start from
PROBE_FIT_LR = 1e-2  # linear heads on frozen features: a few hundred Adam steps at this rate fit them


def region_targets(clip: SynthClip, grid: int) -> torch.Tensor:
    """[T, grid^2] long: 1 + the ATTRIBUTES index of the object centred in each region of the frame tokens'
    row-major grid (the vision tower's, which a pretrained tower decides), 0 none."""
    regions = torch.zeros(len(clip.objects), grid * grid, dtype=torch.long)
    for i, frame in enumerate(clip.objects):
        for x, y, a in frame:
            regions[i, int(y * grid) * grid + int(x * grid)] = 1 + a
    return regions


class CubeProbe(torch.nn.Module):
    """Training-only head: what a cube shows, read from its tokens: which (colour, shape) pairs are in view at
    its last frame, and which events (EVENT_KEYS) begin within it.

    A dense, direct signal that teaches the vision side what the world is made of, and what happens in it,
    long before the LLM has learnt to read cubes; it is not part of the served model.
    """

    def __init__(self, dim: int):
        super().__init__()
        self.head = torch.nn.Linear(dim, len(ATTRIBUTES) + len(EVENT_KEYS))

    def forward(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # [N, K, D] -> [N, A], [N, E] logits
        logits = self.head(tokens).amax(dim=1)
        return logits[:, :len(ATTRIBUTES)], logits[:, len(ATTRIBUTES):]


class RegionProbe(torch.nn.Module):
    """Training-only head: which (colour, shape) object, if any, is centred in each frame token's region.

    Cube-level signals (QA, the attribute probe) say little about shape, which the tower then never
    learns (every shape answer came out "triangle"); this dense one reaches every frame token.
    """

    def __init__(self, dim: int):
        super().__init__()
        self.head = torch.nn.Linear(dim, 1 + len(ATTRIBUTES))

    def forward(self, features: torch.Tensor) -> torch.Tensor:  # [T, P, D] -> [T, P, 1 + A] logits
        return self.head(features)


# The event keys of each kind, for a softmax over which one: (kind, [indices into EVENT_KEYS]).
EVENT_GROUPS = [(kind, [i for i, k in enumerate(EVENT_KEYS) if k[0] == kind]) for kind in WHEN_KINDS]


def which_event_loss(event_logits: torch.Tensor, begun: torch.Tensor) -> torch.Tensor:
    """For each cube where an enter (a leave, a colour change) begins, the cross-entropy of which one among
    the keys of that kind: the log-likelihood of the set that began, against every key of its kind.

    Per-key BCE was content to say "something entered" and "a red circle is in view" without naming which
    object entered, though the same probe named the objects in view; most wrong "when" answers then pointed
    at another event. A softmax makes the keys of a kind compete."""
    terms = []
    for _, keys in EVENT_GROUPS:
        logits, target = event_logits[:, keys], begun[:, keys]
        rows = target.any(1)
        if rows.any():
            logits, target = logits[rows], target[rows]
            terms.append((logits.logsumexp(1) - logits.masked_fill(target == 0, -math.inf).logsumexp(1)).mean())
    return torch.stack(terms).mean() if terms else event_logits.new_zeros(())


def probe_losses(clip: SynthClip, out, probe: CubeProbe | None, region_probe: RegionProbe | None) -> dict:
    """The training-only probes' losses on one encoded clip: what its cubes show, and each region's object."""
    parts = {}
    if probe is not None:
        last = [s + n - 1 for s, n in zip(out.starts, out.lengths)]
        begun = torch.stack([clip.events[s:s + n].amax(0) for s, n in zip(out.starts, out.lengths)])
        attr_logits, event_logits = probe(out.tokens)
        parts["attributes"] = F.binary_cross_entropy_with_logits(attr_logits, clip.attributes[last],
                                                                 pos_weight=torch.tensor(ATTRIBUTE_POS_WEIGHT))
        parts["events"] = F.binary_cross_entropy_with_logits(event_logits, begun, pos_weight=torch.tensor(EVENT_POS_WEIGHT))
        parts["event_objects"] = which_event_loss(event_logits, begun)
    if region_probe is not None:
        grid = math.isqrt(out.features.shape[1])
        weight = torch.tensor([EMPTY_REGION_WEIGHT] + [1.0] * len(ATTRIBUTES))
        parts["regions"] = F.cross_entropy(region_probe(out.features).flatten(0, 1), region_targets(clip, grid).flatten(), weight=weight)
    return parts


def save_probes(path: Path, probe: CubeProbe | None, region_probe: RegionProbe | None) -> None:
    heads = {"probe": probe, "region_probe": region_probe}
    save_file({f"{name}.{k}": v.detach().contiguous() for name, m in heads.items() if m is not None
               for k, v in m.state_dict().items()}, str(path / PROBES))


def load_probes(path: Path, probe: CubeProbe | None, region_probe: RegionProbe | None) -> bool:
    """The probes saved beside the checkpoint at `path` into `probe` and `region_probe`; False unless it has
    every one of them that is not None (a run without the region probe saves none of it)."""
    if not (path / PROBES).is_file():
        return False
    tensors, found = load_file(str(path / PROBES)), True
    for name, m in (("probe", probe), ("region_probe", region_probe)):
        if m is not None and (own := {k.removeprefix(f"{name}."): v for k, v in tensors.items() if k.startswith(f"{name}.")}):
            m.load_state_dict(own)
        found &= m is None or bool(own)
    return found


def fit_probes(cfg: Config, encoder: CubeEncoder, probe: CubeProbe | None, region_probe: RegionProbe | None,
               rng: random.Random, worlds: dict, steps: int, progress: bool = True) -> dict:
    """Fit fresh probes to a trained model's features, the model frozen; returns the last step's losses.

    A fine-tune from a checkpoint without its probes starts them at random, and their first gradients,
    weighted as a converged model's, reshape the tower to suit random heads (the total loss starts an order
    of magnitude above that with fitted probes, and held-out accuracy falls)."""
    heads = [m for m in (probe, region_probe) if m is not None]
    if not heads or steps == 0:
        return {}
    opt = torch.optim.Adam([p for m in heads for p in m.parameters()], lr=PROBE_FIT_LR)
    result = {}
    for _ in tqdm(range(steps), disable=not progress, desc="fit probes"):
        clips = [sample_clip(cfg, rng, (0, cfg.train.train_seeds), worlds) for _ in range(cfg.train.clips_per_step)]
        with torch.no_grad():
            outs = [encoder.encode_clip(c.frames, noise=0.0, state=s) for c, s in zip(clips, warm_states(encoder, clips))]
        parts: dict = {}
        for clip, out in zip(clips, outs):
            for k, v in probe_losses(clip, out, probe, region_probe).items():
                parts.setdefault(k, []).append(v)
        total = sum(torch.stack(v).mean() for v in parts.values())
        opt.zero_grad(set_to_none=True)
        total.backward()
        opt.step()
        result = {k: torch.stack(v).mean().item() for k, v in parts.items()}
    return result


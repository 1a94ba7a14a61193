"""What a checkpoint's live cubes say, read by its fitted training-only cube probe: the objects in view at
each cube's end, and, for each enter, leave and colour change begun in a cube, whether its key (the
object, or the new colour, a "when" question names) is the probe's top of its kind.

A linear read-out, not the LLM: where the probe cannot tell which object entered, the pointer picking
"the cube where a red bar entered" has little to go on. Held-out worlds streamed through the live path
(`StreamEncoder`), as `cubestream eval` streams them. The checkpoint needs its `probes.safetensors`.
Run: .venv/bin/python bench/bench_cube_probe.py --worlds 4 [--checkpoint runs/X]
"""
from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path

import torch

from configs import load_config
from models.checkpoint import checkpoint_dir, load_model
from models.stream_encoder import StreamEncoder
from models.synthetic.evaluate import stream_world
from models.synthetic.probes import EVENT_GROUPS, CubeProbe, load_probes
from models.synthetic.vocabulary import ATTRIBUTES, EVENT_KEYS
from models.train import FPS
from stream.questions import WHEN_KINDS, when_key
from stream.synth import SynthWorld


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--worlds", type=int, default=4)
    ap.add_argument("--first-world", type=int, default=11000)
    ap.add_argument("--seconds", type=float, default=600.0)
    ap.add_argument("--checkpoint", help="default: the profile's shipped one")
    args = ap.parse_args()
    torch.set_num_threads(2)
    cfg = load_config("default")
    encoder, _ = load_model(cfg, args.checkpoint)
    probe = CubeProbe(cfg.resampler.out_dim)
    path = Path(args.checkpoint) if args.checkpoint else checkpoint_dir(cfg)
    if not load_probes(path, probe, None):
        raise SystemExit(f"{path} has no fitted probes (probes.safetensors)")
    groups = dict(EVENT_GROUPS)
    right, total = Counter(), Counter()
    for seed in range(args.first_world, args.first_world + args.worlds):
        world = SynthWorld(seed=seed, width=cfg.vision.image_size, height=cfg.vision.image_size)
        with torch.no_grad():
            cubes = stream_world(StreamEncoder(encoder.eval()), world, args.seconds)
            attrs, events = probe(torch.stack([c.tokens for c in cubes]))
        for c, a, e in zip(cubes, attrs, events):
            in_view = {(o.colour, o.shape) for o in world.objects_at(c.end) if 0 < o.x < 1}
            top = {ATTRIBUTES[i] for i in a.topk(len(in_view)).indices.tolist()} if in_view else set()
            right["in view"] += len(top & in_view)
            total["in view"] += len(in_view)
            # an event's first frame is the first at or after it: it begins in this cube if that frame is here
            for ev in world.events_between(c.start - 1 / FPS + 1e-6, c.end + 1e-6):
                if ev.kind in WHEN_KINDS:
                    keys = groups[ev.kind]
                    right[ev.kind] += EVENT_KEYS[max(keys, key=lambda i: e[i])] == when_key(ev)
                    total[ev.kind] += 1
    print(f"\n{args.worlds} held-out worlds from {args.first_world} x {args.seconds:g} s, live path, "
          f"checkpoint {path}\n")
    print("| read from a cube's tokens | right | of | chance |\n| --- | ---: | ---: | ---: |")
    chance = {"in view": None, **{k: 1 / len(groups[k]) for k in WHEN_KINDS}}
    for k in ("in view", *WHEN_KINDS):
        c = "-" if chance[k] is None else f"{chance[k]:.0%}"
        print(f"| {'objects in view (colour, shape)' if k == 'in view' else f'which {k}'} | "
              f"{right[k] / max(total[k], 1):.1%} | {total[k]} | {c} |")


if __name__ == "__main__":
    main()

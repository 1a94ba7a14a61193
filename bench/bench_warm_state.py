"""How much a clip's answers depend on the temporal state it starts from: zeros (as training ran before
`train.warmup_seconds`) or the state after the seconds of world before it (as a live stream has).

Held-out clips (quick_eval's worlds and draw), every cube in the prompt, greedy answers; the same questions
in every column, so the differences are paired. Run: .venv/bin/python bench/bench_warm_state.py --clips 24
"""
from __future__ import annotations

import argparse
import random

import numpy as np
import torch

from configs import load_config
from models.checkpoint import load_model
from models.synthetic.clips import sample_clip
from models.train import FPS, clip_cubes
from stream.questions import is_correct


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clips", type=int, default=24)
    ap.add_argument("--history", default="0,30,300,1000", help="seconds of world before each clip, comma-separated")
    ap.add_argument("--checkpoint", help="default: the profile's shipped one")
    args = ap.parse_args()
    torch.set_num_threads(1)
    cfg = load_config("default")
    encoder, llm = load_model(cfg, args.checkpoint)
    histories = [float(h) for h in args.history.split(",")]
    right, total, rng = dict.fromkeys(histories, 0), 0, random.Random(12345)
    for _ in range(args.clips):
        worlds: dict = {}
        clip = sample_clip(cfg, rng, (cfg.train.train_seeds, cfg.train.train_seeds + 500), worlds)
        (world,) = worlds.values()
        for h in histories:
            before = [clip.times[0] - k / FPS for k in range(min(int(h * FPS), int(clip.times[0] * FPS)), 0, -1)]
            state = encoder.temporal_state(torch.as_tensor(np.stack([world.frame_at(t) for t in before]))[None])[0] \
                if before else None
            with torch.no_grad():
                _, cubes = clip_cubes(encoder, clip, 0.0, state)
                for q in clip.questions:
                    right[h] += is_correct(q, llm.generate(llm.prompt(cubes, q.text, now=q.asked_at), cfg.answer.max_answer_tokens)[0])
        total += len(clip.questions)
    print(f"\n{args.clips} held-out clips, {total} questions, 1 torch thread\n")
    print("| history before the clip (s) | QA |\n| ---: | ---: |")
    for h in histories:
        print(f"| {h:g} | {right[h] / max(total, 1):.1%} |")


if __name__ == "__main__":
    main()

"""Question latency against how much history a stream's memory holds (1 minute, 1 hour, 24 hours).

The memory is filled as a stream at 2 fps would fill it (bench_memory's simulated cubes, the profile's
token budget, merging old neighbours), then questions are answered through the XComp selection and the LLM.
Prints a table of p50/p95 latency. Run: .venv/bin/python bench/bench_query.py [--config default]
"""
from __future__ import annotations

import argparse
import random
import statistics

import numpy as np
import torch

from configs import load_config
from models.answerer import Answerer
from models.checkpoint import load_model
from models.llm import CubeLLM, build_tokenizer
from models.synthetic.clips import tokenizer_corpus
from bench_memory import simulated_memory  # bench/ is on the path when run as a script
from stream.questions import make_questions
from stream.synth import SynthWorld

def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--config", default="default")
    ap.add_argument("--queries", type=int, default=20)
    args = ap.parse_args()
    cfg = load_config(args.config)
    if cfg.checkpoint:
        _, llm = load_model(cfg)
    else:
        torch.manual_seed(cfg.seed)
        llm = CubeLLM(cfg, tokenizer=build_tokenizer(tokenizer_corpus(cfg, 8))).eval()
    answerer = Answerer(llm, cfg.answer)
    world = SynthWorld(seed=1)

    print(f"\nquestion latency, profile {args.config!r}, token budget {cfg.memory.token_budget}, "
          f"context {cfg.answer.context_tokens} tokens, torch threads {torch.get_num_threads()}\n")
    print("| history | memory entries | levels | p50 ms | p95 ms | cubes shown |")
    print("| --- | --- | --- | --- | --- | --- |")
    for label, seconds in (("1 minute", 60.0), ("1 hour", 3600.0), ("24 hours", 86400.0)):
        mem = simulated_memory(seconds, cfg, with_thumbnails=False)
        qs = make_questions(world, 600.0, random.Random(0), n=args.queries)
        entries = mem.entries()
        answerer.answer(entries, qs[0].text)  # warm-up
        times, shown = [], []
        for q in qs:
            a = answerer.answer(entries, q.text)
            times.append(a.latency_s * 1e3)
            shown.append(a.cubes_used)
        print(f"| {label} | {len(mem)} | {max(mem.levels()) + 1} | {statistics.median(times):.0f} | "
              f"{np.percentile(times, 95):.0f} | {statistics.median(shown):.0f} |")


if __name__ == "__main__":
    main()

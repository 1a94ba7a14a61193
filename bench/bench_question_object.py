"""Whether a checkpoint's LLM reads the object a question names: "When did a <colour> <shape> last
enter?" (and "... leave?") asked over one and the same window of live cubes for 12 objects, and how alike
the states the pointer is given are across them (cosine, over every pair of objects).

Where the answer position's last-layer state is the same whatever object is named (cosine ~1), the
pointer's query is too, and "when" can only point at the most event-like cube, not at the one named. The
window: the last 16 cubes of a held-out world's first `--seconds`, streamed through the live path.
Run: .venv/bin/python bench/bench_question_object.py [--checkpoint runs/X] [--set KEY=VALUE]
"""
from __future__ import annotations

import argparse
import itertools

import torch
import torch.nn.functional as F

from actors.cli import settings
from configs import load_config
from models.checkpoint import load_model
from models.synthetic.evaluate import stream_world
from models.stream_encoder import StreamEncoder
from stream.synth import SynthWorld

OBJECTS = [f"{c} {s}" for c in ("red", "blue", "green", "yellow") for s in ("circle", "bar", "square")]
WINDOW = 16  # cubes: what selection scores at a time (answer.window_cubes)


def cosines(states: list[torch.Tensor]) -> tuple[float, float]:
    """Minimum and mean cosine over every pair."""
    c = [F.cosine_similarity(a, b, dim=0).item() for a, b in itertools.combinations(states, 2)]
    return min(c), sum(c) / len(c)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", help="default: the profile's shipped one")
    ap.add_argument("--world", type=int, default=10100)
    ap.add_argument("--seconds", type=float, default=200.0)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = ap.parse_args()
    torch.set_num_threads(2)
    cfg = load_config("default", settings(args.set))
    encoder, llm = load_model(cfg, args.checkpoint)
    world = SynthWorld(seed=args.world, width=cfg.vision.image_size, height=cfg.vision.image_size)
    with torch.no_grad():
        cubes = [(c.start, c.end, c.tokens) for c in stream_world(StreamEncoder(encoder), world, args.seconds)[-WINDOW:]]
    print(f"\ncheckpoint {args.checkpoint or 'shipped'}, world {args.world}, the last {len(cubes)} cubes of "
          f"{args.seconds:g} s, {len(OBJECTS)} objects\n")
    print("| question | answer position, last layer: min / mean cosine | question tokens pooled | pointer query |")
    print("| --- | --- | --- | --- |")
    for verb in ("enter", "leave"):
        last, pooled, query = [], [], []
        with torch.no_grad():
            for obj in OBJECTS:
                prompt = llm.prompt(cubes, f"When did a {obj} last {verb}?")
                hidden = llm.lm(inputs_embeds=prompt.embeds[None], output_hidden_states=True).hidden_states[-1][0]
                last.append(hidden[-1])
                pooled.append(hidden[slice(*prompt.question_span)].mean(0))
                query.append(llm.pointer.query(last[-1]) + llm.pointer.question(pooled[-1]))
        row = " | ".join("{:.7f} / {:.7f}".format(*cosines(s)) for s in (last, pooled, query))
        print(f"| When did a ... last {verb}? | {row} |")


if __name__ == "__main__":
    main()

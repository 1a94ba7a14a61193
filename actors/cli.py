"""The `cubestream` command line."""
from __future__ import annotations

import argparse
import sys


def cmd_clip(args) -> int:
    """Run a synthetic camera clip through the streaming model, frame by frame, printing each cube as it closes."""

    from configs import load_config
    from models import StreamEncoder
    from models.checkpoint import load_encoder
    from stream.synth import SynthWorld

    cfg = load_config(args.config)
    encoder = StreamEncoder(load_encoder(cfg))
    world = SynthWorld(seed=args.seed, width=cfg.vision.image_size, height=cfg.vision.image_size)
    encoder.add_stream("synth")
    dt = 1.0 / cfg.sampler.fps
    n = int(args.seconds * cfg.sampler.fps)
    print(f"{n} frames at {cfg.sampler.fps:g} fps from synth://?seed={args.seed}; profile {args.config!r}")
    print(f"{'cube':>5} {'start s':>8} {'end s':>8} {'frames':>6} {'score':>6}  tokens   true events in the span")
    cubes = []
    for i in range(n):
        t = i * dt
        cubes += encoder.push(["synth"], [world.frame_at(t)], [t])
        while cubes:
            _print_cube(cubes.pop(0), world, dt)
    last = encoder.flush("synth")
    if last:
        _print_cube(last, world, dt)
    return 0


def cmd_train(args) -> int:
    """Train the profile end to end on the synthetic world; writes a checkpoint folder to --out."""
    from configs import load_config
    from models.train import train

    overrides = {"train": {k: v for k, v in (("steps", args.steps), ("max_minutes", args.minutes)) if v is not None}}
    cfg = load_config(args.config, overrides=overrides)
    result = train(cfg, args.out, resume=args.resume)
    print("final: " + " ".join(f"{k} {v:.4g}" for k, v in result.items()))
    return 0


def cmd_eval(args) -> int:
    """Evaluate a checkpoint on held-out synthetic worlds; prints a table and writes JSON."""
    import json

    from configs import load_config
    from models.checkpoint import load_model
    from models.evaluate import METHODS, evaluate, table

    cfg = load_config(args.config)
    encoder, llm = load_model(cfg, args.checkpoint)
    first = cfg.train.train_seeds + 1000  # never trained on
    methods = tuple(args.methods.split(",")) if args.methods else METHODS
    results = evaluate(cfg, encoder, llm, list(range(first, first + args.worlds)), args.seconds,
                       questions=args.questions, methods=methods)
    print(f"\n{args.worlds} held-out worlds x {args.seconds:g} s streamed at 2 fps, {args.questions} questions each\n")
    print(table(results))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"worlds": args.worlds, "seconds": args.seconds, "results": results}, f, indent=2)
    return 0


def _print_cube(c, world, dt) -> None:
    events = ", ".join(f"{e.kind} {e.colour} {e.shape} @{e.t:.1f}" for e in world.events_between(c.start, c.end + dt))
    print(f"{c.index:>5} {c.start:>8.1f} {c.end:>8.1f} {c.num_frames:>6} {c.score:>6.2f}  {tuple(c.tokens.shape)!s:8} {events}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="cubestream", description=__doc__)
    sub = ap.add_subparsers(dest="command", required=True)
    for name, help_ in (("demo", "the main job (for now: a synthetic clip through the model)"),
                        ("clip", "a synthetic clip through the model, printing its cubes")):
        p = sub.add_parser(name, help=help_)
        p.add_argument("--config", default="default", help="profile name in configs/ or a YAML path")
        p.add_argument("--seconds", type=float, default=60.0)
        p.add_argument("--seed", type=int, default=0)
        p.set_defaults(func=cmd_clip)
    p = sub.add_parser("train", help="train a profile end to end on the synthetic world")
    p.add_argument("--config", default="default")
    p.add_argument("--out", required=True, help="checkpoint folder (written every train.save_every steps)")
    p.add_argument("--resume", action="store_true", help="continue from the checkpoint in --out")
    p.add_argument("--steps", type=int, help="override train.steps")
    p.add_argument("--minutes", type=float, help="override train.max_minutes")
    p.set_defaults(func=cmd_train)
    p = sub.add_parser("eval", help="QA accuracy, boundary F1 and compression on held-out synthetic worlds")
    p.add_argument("--config", default="default")
    p.add_argument("--checkpoint", help="checkpoint folder (default: the profile's)")
    p.add_argument("--worlds", type=int, default=8)
    p.add_argument("--seconds", type=float, default=1200.0, help="stream length per world")
    p.add_argument("--questions", type=int, default=24, help="questions per world, asked at the stream's end")
    p.add_argument("--methods", help=f"comma-separated subset of {','.join(('adaptive', 'fixed', 'uniform', 'recent'))}")
    p.add_argument("--json", help="write the results here")
    p.set_defaults(func=cmd_eval)
    args = ap.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())

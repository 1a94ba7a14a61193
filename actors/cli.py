"""The `cubestream` command line."""
from __future__ import annotations

import argparse
import contextlib
import sys


def settings(pairs: list[str] | None) -> dict:
    """`--set train.lr=5e-4 --set answer.context_tokens=160` -> nested config overrides (values read as YAML)."""
    import yaml

    out: dict = {}
    for pair in pairs or []:
        key, eq, value = pair.partition("=")
        if not eq or not key.strip():
            raise SystemExit(f"--set wants key.path=value, got {pair!r}")
        *parents, leaf = key.strip().split(".")
        node = out
        for k in parents:
            node = node.setdefault(k, {})
        node[leaf] = yaml.safe_load(value)
        if isinstance(node[leaf], str):  # YAML 1.1 reads 5e-4 (no dot) as text
            with contextlib.suppress(ValueError):
                node[leaf] = float(node[leaf])
    return out


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
    from models.synthetic.recipe import SyntheticRecipe
    from models.train import train

    overrides = settings(args.set)
    overrides.setdefault("train", {}).update({k: v for k, v in (("steps", args.steps), ("max_minutes", args.minutes)) if v is not None})
    cfg = load_config(args.config, overrides=overrides)
    result = train(cfg, args.out, SyntheticRecipe(cfg), resume=args.resume, init=args.init)
    print("final: " + " ".join(f"{k} {v:.4g}" for k, v in result.items()))
    return 0


def cmd_fit_readers(args) -> int:
    """Fit the synthetic world's readers of the whole memory (`SyntheticReaders`: the EventLocator and the
    SequenceReader) of a trained checkpoint on live memories of training worlds; rewrites its weights."""
    from pathlib import Path

    from configs import load_config
    from models.checkpoint import load_model, save_checkpoint
    from models.synthetic.fit import fit_locator, fit_reader, live_memories
    from models.synthetic.probes import CubeProbe, load_probes

    cfg = load_config(args.config, overrides=settings(args.set))
    encoder, llm = load_model(cfg, args.checkpoint)
    probe = CubeProbe(cfg.resampler.out_dim)
    if not load_probes(Path(args.checkpoint), probe, None):
        raise SystemExit(f"{args.checkpoint} has no fitted probes (probes.safetensors): train it first")
    memories = live_memories(cfg, encoder, range(args.first_world, args.first_world + args.worlds), args.seconds,
                             tight_budget=args.tight_budget or None)
    located = fit_locator(cfg, llm, probe, memories, steps=args.locator_steps, fits=args.locator_fits)
    read = fit_reader(cfg, llm, probe, memories, steps=args.reader_steps)
    save_checkpoint(args.checkpoint, encoder, llm)
    print(f"locator fitted on {located['questions']} questions, final loss {located['loss']:.3f}; reader on "
          f"{read['questions']}, final loss {read['loss']:.3f}; saved to {args.checkpoint}")
    return 0


def cmd_eval(args) -> int:
    """Evaluate a checkpoint on held-out synthetic worlds; prints a table and writes JSON."""
    import json

    if args.dataset:
        return cmd_eval_dataset(args)

    from configs import load_config
    from models.checkpoint import load_model
    from models.synthetic.evaluate import METHODS, evaluate, table

    cfg = load_config(args.config, overrides=settings(args.set))
    encoder, llm = load_model(cfg, args.checkpoint)
    # test worlds by default; choices such as cubing.target_len are made on others (--first-world)
    first = cfg.train.train_seeds + 1000 if args.first_world is None else args.first_world
    methods = tuple(args.methods.split(",")) if args.methods else METHODS
    results = evaluate(cfg, encoder, llm, list(range(first, first + args.worlds)), args.seconds,
                       questions=args.questions, methods=methods)
    print(f"\n{args.worlds} held-out worlds x {args.seconds:g} s streamed at 2 fps, {args.questions} questions each; "
          f"'LLM alone' is the general path, 'LLM + readers' adds the synthetic world's closed-vocabulary readers\n")
    print(table(results))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"worlds": args.worlds, "seconds": args.seconds, "results": results}, f, indent=2)
    return 0


def cmd_eval_dataset(args) -> int:
    """`eval --dataset DIR --format F`: a video QA benchmark replayed live, beside the recent-frames baseline."""
    import json
    import os

    from actors.benchmark import profile_methods, replay, table
    from configs import load_config
    from models.checkpoint import load_model, load_stage1
    from stream.datasets import load_dataset

    if not args.format:
        raise SystemExit("eval --dataset needs --format (ovo, streamingbench or llava)")
    cfg = load_config(args.config, overrides=settings(args.set))
    if args.stage1:
        cfg.stage1 = os.path.abspath(args.stage1)
    dataset = load_dataset(args.dataset, args.format)
    for p in dataset.problems:
        print(f"skipped {p.where}: {p.reason}")
    encoder = llm = None
    if args.checkpoint and not cfg.model.vlm:
        encoder, llm = load_model(cfg, args.checkpoint)
        if cfg.stage1:
            load_stage1(encoder, llm, cfg.stage1)
    results = replay(dataset, profile_methods(cfg, encoder, llm, args.recent_frames), cfg, fps=args.fps)
    print(f"\n{args.dataset} ({args.format}): {len(dataset.items)} questions, replayed live at "
          f"{results['fps']:g} fps\n")
    print(table(results))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"dataset": str(args.dataset), "format": args.format} | results, f, indent=2)
    return 0


def cmd_train_stage1(args) -> int:
    """Stage-1 training of the streaming modules under the profile's frozen vision tower and LLM, on Ray Train."""
    import os

    import ray

    from actors.train_ray import Stage1Settings, train_stage1
    from configs import load_config

    cfg = load_config(args.config, overrides=settings(args.set))
    s = Stage1Settings(dataset=os.path.abspath(args.dataset), format=args.format, steps=args.steps,
                       batch_size=args.batch_size, lr=args.lr, clip_seconds=args.clip_seconds, fps=args.fps,
                       save_every=args.save_every, train_projector=not args.no_projector,
                       checkpoint=os.path.abspath(args.checkpoint) if args.checkpoint else None, seed=args.seed,
                       strategy=args.strategy)
    ray.init(address=args.address, include_dashboard=False)
    result = train_stage1(cfg, s, os.path.abspath(args.storage) if "://" not in args.storage else args.storage,
                          args.name, workers=args.workers, use_gpu=args.gpu,
                          resume_from=os.path.abspath(args.resume_from) if args.resume_from else None)
    print("final: " + " ".join(f"{k} {v:.4g}" for k, v in result.metrics.items()))
    print(f"checkpoint: {result.checkpoint.path}  (use it with: cubestream eval --dataset ... --stage1 "
          f"{result.checkpoint.path})")
    return 0


def cmd_export_synth(args) -> int:
    """Write synthetic worlds as a video dataset (mp4 + JSON) in a format `eval --dataset` and training read."""
    from stream.synth_export import export_synth

    path = export_synth(args.out, args.format, videos=args.videos, seconds=args.seconds, questions=args.questions,
                        fps=args.fps, size=args.size, first_seed=args.first_seed)
    print(f"wrote {args.videos} videos and {path}")
    return 0


def cmd_serve(args) -> int:
    """Start the runtime (embedded local Ray, or join --address) and its HTTP gateway; runs until SIGTERM or
    Ctrl-C, then stops gracefully (every stream's state saved) and exits 0."""
    import signal
    import threading

    from actors.server import Service
    from configs import load_config
    from models.vlm import VLMError

    overrides = settings(args.set)
    overrides["server"] = overrides.get("server", {}) | {k: v for k, v in (("host", args.host), ("port", args.port))
                                                         if v is not None}
    cfg = load_config(args.config, overrides=overrides)
    if args.config == "vlm" and not cfg.model.vlm:  # else the profile would serve the untrained toy model
        raise SystemExit("cubestream: the vlm profile needs a model: --set model.vlm=HF_ID_OR_PATH (docs/vlm.md)")
    stop = threading.Event()
    try:
        svc = Service(cfg, address=args.address).start()
    except VLMError as e:  # model.vlm that cannot serve: said before anything starts
        raise SystemExit(f"cubestream: {e}") from None
    try:
        # after ray.init, which installs a SIGTERM handler of its own (exit 15, no shutdown of ours)
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda signum, _: stop.set())
        print(f"cubestream serving on {svc.url}\nexport CUBESTREAM_URL={svc.url} CUBESTREAM_TOKEN={svc.token}\n"
              f"monitoring page: {svc.url}/ (sign in with the token)", flush=True)
        stop.wait()
        print("cubestream: stopping; saving every stream's state", flush=True)
    finally:
        svc.close()
    return 0


def cmd_add(args) -> int:
    s = _client(args).add(args.id, args.source)
    print(f"added {s['id']}: {s['spec']} (encoder {s['encoder']})")
    return 0


def cmd_streams(args) -> int:
    # skipped and behind: a camera decoded past the machine's capacity (frames left undecoded, seconds behind)
    print(f"{'id':16} {'state':12} {'sampled':>8} {'dropped':>8} {'skipped':>8} {'behind':>7} {'encoded':>8} {'cubes':>6}  source")
    for s in _client(args).streams():
        src, enc = s["source"], s["encoder_counters"]
        print(f"{s['id']:16} {src.get('state', '?'):12} {src.get('frames_sampled', 0):>8} {src.get('frames_dropped', 0):>8} "
              f"{src.get('frames_skipped', 0):>8} {src.get('lag', 0.0):>6.1f}s {enc.get('frames', 0):>8} "
              f"{enc.get('cubes', 0):>6}  {s['spec']}")
    return 0


def cmd_ask(args) -> int:
    a = _client(args).ask(args.id, args.question, args.start, args.end, args.option)
    print(a["text"])
    for option, logp in zip(args.option or [], a.get("option_logprobs", [])):
        print(f"  option {option!r}: log-likelihood {logp:.3f}")
    for c in a["citations"]:
        print(f"  cited t={c['start']:.1f}-{c['end']:.1f}s (score {c['score']:.3f})")
    return 0


def cmd_remove(args) -> int:
    _client(args).remove(args.id)
    print(f"removed {args.id}")
    return 0


def cmd_watch(args) -> int:
    settings = {k: v for k, v in (("id", args.watch_id), ("options", args.option), ("window_s", args.window),
                                  ("confirm", args.confirm), ("clear_s", args.clear), ("cooldown_s", args.cooldown))
                if v is not None}
    w = _client(args).add_watch(args.id, args.question, args.answer, **settings)
    print(f"watch {w['id']} on {w['stream']}: {w['question']!r} fires on {', '.join(w['answers'])}")
    return 0


def cmd_watches(args) -> int:
    print(f"{'watch':12} {'stream':16} {'armed':5} {'fires on':16} question")
    for w in _client(args).watches(args.id):
        print(f"{w['id']:12} {w['stream']:16} {str(w['state']['armed']):5} {','.join(w['answers']):16} {w['question']}")
    return 0


def cmd_unwatch(args) -> int:
    _client(args).remove_watch(args.id, args.watch_id)
    print(f"removed watch {args.watch_id}")
    return 0


def cmd_events(args) -> int:
    client = _client(args)
    events = client.follow_events(args.after, args.stream, timeout=3600) if args.follow else \
        client.events(since=args.since, after=args.after, stream=args.stream, limit=args.limit)
    for e in events:
        print(f"#{e['id']} {e['stream']} watch {e['watch']}: {e['answer']!r} at t={e['start']:.1f}-{e['end']:.1f}s  "
              f"{e['thumbnail']}", flush=True)
    return 0


def cmd_search(args) -> int:
    for r in _client(args).search(args.query, args.stream, args.start, args.end, args.limit):
        print(f"{r['score']:8.3f}  {r['stream']:16} t={r['start']:.1f}-{r['end']:.1f}s  {r['thumbnail']}")
    return 0


def cmd_chat(args) -> int:
    c = _client(args).chat(args.id, args.question, args.start, args.end)
    print(c["choices"][0]["message"]["content"])
    return 0


def _client(args):
    import os

    from actors.client import Client

    token = args.token or os.environ.get("CUBESTREAM_TOKEN")
    if not token:
        raise SystemExit("cubestream: no token: pass --token or set CUBESTREAM_TOKEN (serve prints it)")
    return Client(args.url or os.environ.get("CUBESTREAM_URL", "http://127.0.0.1:8080"), token)


def cmd_demo(args) -> int:
    """The main job: the runtime on embedded local Ray, a live synthetic camera, its cube timeline as it
    forms, then questions answered with cited times beside the ground truth."""
    import time

    from actors.client import Client
    from actors.server import Service
    from configs import load_config
    from stream.questions import make_questions
    from stream.synth import SynthWorld

    cfg = load_config(args.config, overrides={"server": {"port": 0}})
    if args.snapshots:
        cfg.runtime.snapshot_dir = args.snapshots
    else:
        import tempfile

        cfg.runtime.snapshot_dir = tempfile.mkdtemp(prefix="cubestream-demo-")
    size = cfg.vision.image_size
    spec = f"synth://?seed={args.seed}&fps={2 * cfg.sampler.fps:g}&speed={args.speed:g}&width={size}&height={size}"
    world = SynthWorld(seed=args.seed, width=size, height=size)
    dt = 1.0 / cfg.sampler.fps
    print(f"starting the runtime on local Ray (profile {args.config!r}) ...", flush=True)
    with Service(cfg) as svc:
        client = Client(svc.url, svc.token)
        if "camera" not in {s["id"] for s in client.streams()}:  # else restored from --snapshots' registry
            client.add("camera", spec)
        print(f"gateway {svc.url}; live camera {spec}, {args.seconds:g} s of stream at {args.speed:g}x real time\n")
        print(f"{'entry':>5} {'start s':>8} {'end s':>8} {'frames':>6} {'level':>5}   true events in the span")
        shown, t_now = -1, 0.0  # the newest entry id printed: a merge of old entries prints as a new row
        while t_now < args.seconds:
            time.sleep(0.5)
            timeline = client.timeline("camera")
            for c in timeline:
                if c["id"] > shown:
                    _print_cube_row(c, world, dt)
            shown = max([shown] + [c["id"] for c in timeline])
            t_now = timeline[-1]["end"] if timeline else 0.0
            print(f"  [{min(t_now, args.seconds):6.1f} / {args.seconds:g} s]", end="\r", flush=True)
        print()
        s = client.stream("camera")
        print(f"\n{s['encoder_counters']['frames']} frames encoded into {s['encoder_counters']['cubes']} cubes; "
              f"frame to memory p50 {1000 * (s['latency_p50'] or 0):.0f} ms, p95 {1000 * (s['latency_p95'] or 0):.0f} ms\n")
        for q in make_questions(world, t_now, rng=args.seed, n=args.questions, max_age=t_now):
            a = client.ask("camera", q.text, options=list(q.options) or None)
            cited = ", ".join(f"{c['start']:.1f}-{c['end']:.1f}s" for c in a["citations"])
            print(f"Q: {q.text}\n   answer: {a['text']!r}   cited: {cited}\n"
                  f"   truth:  {q.answer!r} seen at {q.evidence_time[0]:.1f}-{q.evidence_time[1]:.1f}s "
                  f"({1000 * a['latency_s']:.0f} ms)")
    print("\ndone.")
    return 0


def _print_cube_row(c: dict, world, dt: float) -> None:
    events = ", ".join(f"{e.kind} {e.colour} {e.shape} @{e.t:.1f}" for e in world.events_between(c["start"], c["end"] + dt))
    print(f"\r{c['id']:>5} {c['start']:>8.1f} {c['end']:>8.1f} {c['num_frames']:>6} {c['level']:>5}   {events}")


def _print_cube(c, world, dt) -> None:
    events = ", ".join(f"{e.kind} {e.colour} {e.shape} @{e.t:.1f}" for e in world.events_between(c.start, c.end + dt))
    print(f"{c.index:>5} {c.start:>8.1f} {c.end:>8.1f} {c.num_frames:>6} {c.score:>6.2f}  {tuple(c.tokens.shape)!s:8} {events}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="cubestream", description=__doc__)
    sub = ap.add_subparsers(dest="command", required=True)
    p = sub.add_parser("demo", help="the main job: the runtime on local Ray with a live synthetic camera, then questions")
    p.add_argument("--config", default="default", help="profile name in configs/ or a YAML path")
    p.add_argument("--seconds", type=float, default=90.0, help="stream seconds to watch before asking")
    p.add_argument("--speed", type=float, default=2.0, help="the camera's pace, times real time")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--questions", type=int, default=6)
    p.add_argument("--snapshots", help="snapshot folder (default: a fresh temporary one)")
    p.set_defaults(func=cmd_demo)
    p = sub.add_parser("clip", help="a synthetic clip through the model (no runtime), printing its cubes")
    p.add_argument("--config", default="default", help="profile name in configs/ or a YAML path")
    p.add_argument("--seconds", type=float, default=60.0)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_clip)
    p = sub.add_parser("serve", help="run the runtime and its HTTP API (embedded local Ray, or --address)")
    p.add_argument("--config", default="default")
    p.add_argument("--address", help="join this Ray cluster (e.g. auto) instead of starting a local one")
    p.add_argument("--host")
    p.add_argument("--port", type=int)
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override any config value, e.g. model.vlm=Qwen/Qwen2.5-VL-3B-Instruct")
    p.set_defaults(func=cmd_serve)
    for name, fn, help_ in (("add", cmd_add, "add a stream"), ("streams", cmd_streams, "list streams"),
                            ("ask", cmd_ask, "ask a question of a stream"), ("remove", cmd_remove, "remove a stream"),
                            ("watch", cmd_watch, "add a watch (a standing query that raises alerts)"),
                            ("watches", cmd_watches, "list watches"), ("unwatch", cmd_unwatch, "remove a watch"),
                            ("events", cmd_events, "list alerts, or follow them as they happen (--follow)"),
                            ("search", cmd_search, "search every stream's memory"),
                            ("chat", cmd_chat, "ask through the OpenAI-compatible endpoint")):
        p = sub.add_parser(name, help=help_)
        p.add_argument("--url", help="the gateway (default $CUBESTREAM_URL or http://127.0.0.1:8080)")
        p.add_argument("--token", help="bearer token (default $CUBESTREAM_TOKEN)")
        if name == "watches":
            p.add_argument("id", nargs="?", help="only this stream's")
        if name in ("watch", "unwatch", "chat", "remove"):
            p.add_argument("id")
        if name == "watch":
            p.add_argument("question")
            p.add_argument("--answer", action="append", help="an answer that fires it (repeat; none: a yes/no question)")
            p.add_argument("--option", action="append", help="ask it as multiple choice among these (repeat)")
            p.add_argument("--watch-id", help="the watch's id (default: generated)")
            p.add_argument("--window", type=float, help="seconds of newest stream time asked about (default 30)")
            p.add_argument("--confirm", type=int, help="matching answers in a row before it fires (default 1)")
            p.add_argument("--clear", type=float, help="stream seconds without a match before it can fire again (default 8)")
            p.add_argument("--cooldown", type=float, help="stream seconds between two alerts at least (default 30)")
        if name == "unwatch":
            p.add_argument("watch_id")
        if name == "events":
            p.add_argument("--follow", action="store_true", help="stream them as they happen (Server-Sent Events)")
            p.add_argument("--since", type=float, help="after this unix time")
            p.add_argument("--after", type=int, help="after this event id")
            p.add_argument("--stream")
            p.add_argument("--limit", type=int)
        if name == "search":
            p.add_argument("query")
            p.add_argument("--stream", action="append", help="only these streams (repeat)")
            p.add_argument("--limit", type=int)
        if name in ("search", "chat"):
            p.add_argument("--start", type=float, help="only cubes after this stream time (s)")
            p.add_argument("--end", type=float, help="only cubes before this stream time (s)")
        if name == "chat":
            p.add_argument("question")
        if name in ("add", "ask"):
            p.add_argument("id")
        if name == "add":
            p.add_argument("source", help="rtsp://..., rtsps://..., a file path, synth://?seed=N")
        if name == "ask":
            p.add_argument("question")
            p.add_argument("--start", type=float, help="only cubes after this stream time (s)")
            p.add_argument("--end", type=float, help="only cubes before this stream time (s)")
            p.add_argument("--option", action="append", help="an answer to choose from (repeat: a multiple-choice question)")
        p.set_defaults(func=fn)
    p = sub.add_parser("train", help="train a profile end to end on the synthetic world")
    p.add_argument("--config", default="default")
    p.add_argument("--out", required=True, help="checkpoint folder (written every train.save_every steps)")
    p.add_argument("--resume", action="store_true", help="continue from the checkpoint in --out")
    p.add_argument("--init", help="fine-tune: start from this checkpoint folder's weights (fresh optimizer)")
    p.add_argument("--steps", type=int, help="override train.steps")
    p.add_argument("--minutes", type=float, help="override train.max_minutes")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override any config value, e.g. train.lr=5e-4")
    p.set_defaults(func=cmd_train)
    p = sub.add_parser("fit-readers", help="after train: fit the readers of whole memories ('when', 'what entered "
                       "next / first', 'is it still there?', shape, colour and counts at named times) on training "
                       "worlds' memories")
    p.add_argument("--config", default="default")
    p.add_argument("--checkpoint", required=True, help="a trained checkpoint folder (with its probes); rewritten")
    p.add_argument("--first-world", type=int, default=0)
    p.add_argument("--worlds", type=int, default=40)
    p.add_argument("--seconds", type=float, default=1200.0)
    p.add_argument("--locator-steps", type=int, default=3000)
    p.add_argument("--locator-fits", type=int, default=3, help="locators fitted from as many seeds, their scores "
                   "averaged (one fit's 'when' varies by seed by +-4 points)")
    p.add_argument("--reader-steps", type=int, default=15000)
    p.add_argument("--tight-budget", type=int, default=0, help="also fit on each memory under this token budget "
                   "where it merges, for streams long enough to merge (512: +6 points there, -2 at 900 s; 0: off)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override any config value")
    p.set_defaults(func=cmd_fit_readers)
    p = sub.add_parser("eval", help="QA accuracy, boundary F1 and compression on held-out synthetic worlds")
    p.add_argument("--config", default="default")
    p.add_argument("--checkpoint", help="checkpoint folder (default: the profile's)")
    p.add_argument("--worlds", type=int, default=8)
    p.add_argument("--first-world", type=int, help="seed of the first world (default: train.train_seeds + 1000, the "
                   "test worlds; validation choices such as cubing.target_len used train.train_seeds + 100 ..)")
    p.add_argument("--seconds", type=float, default=1200.0, help="stream length per world")
    p.add_argument("--questions", type=int, default=24, help="questions per world, asked at the stream's end")
    p.add_argument("--methods", help=f"comma-separated subset of {','.join(('adaptive', 'fixed', 'uniform', 'recent'))}")
    p.add_argument("--json", help="write the results here, with every question asked and its answer")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override any config value, e.g. answer.context_tokens=160")
    p.add_argument("--dataset", help="a video QA dataset folder: replay its videos live and score its questions "
                   "(instead of synthetic worlds)")
    p.add_argument("--format", choices=("ovo", "streamingbench", "llava"), help="the dataset's annotation format")
    p.add_argument("--fps", type=float, help="frames per second sampled from the videos (default: sampler.fps)")
    p.add_argument("--recent-frames", type=int, help="the recent-frames baseline shows the newest N frames "
                   "(default: as many as fit answer.context_tokens)")
    p.add_argument("--stage1", help="a stage-1 checkpoint folder (train-stage1): its trained modules over the profile's")
    p.set_defaults(func=cmd_eval)
    p = sub.add_parser("train-stage1", help="stage 1 on Ray Train: the temporal encoder, cubing head, resampler "
                       "(and projector) trained under the profile's frozen vision tower and LLM, on a video QA dataset")
    p.add_argument("--config", default="default")
    p.add_argument("--dataset", required=True, help="a video QA dataset folder")
    p.add_argument("--format", required=True, choices=("ovo", "streamingbench", "llava"))
    p.add_argument("--storage", required=True, help="where checkpoints go: a folder every node sees, or a cloud URI")
    p.add_argument("--name", default="stage1", help="the run's name; rerun the same name and storage to resume")
    p.add_argument("--workers", type=int, default=2, help="data-parallel workers (one GPU each with --gpu)")
    p.add_argument("--gpu", action="store_true", help="a GPU per worker (NCCL); else CPU workers with gloo")
    p.add_argument("--strategy", choices=("ddp", "fsdp"), default="ddp",
                   help="ddp: the whole model on every worker; fsdp: its weights (the frozen VLM's too) sharded "
                        "over the workers, for a VLM too big for one GPU")
    p.add_argument("--address", help="the Ray cluster to run on (default: a local one)")
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--batch-size", type=int, default=4, help="samples per worker per step")
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--clip-seconds", type=float, default=60.0, help="seconds of video before each question")
    p.add_argument("--fps", type=float, help="frames per second sampled (default: sampler.fps)")
    p.add_argument("--save-every", type=int, default=100)
    p.add_argument("--no-projector", action="store_true", help="keep the projector frozen as well")
    p.add_argument("--checkpoint", help="the profile's weights to start from (default: its own)")
    p.add_argument("--resume-from", help="start from this stage-1 checkpoint folder (its step and optimizer)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override any config value")
    p.set_defaults(func=cmd_train_stage1)
    p = sub.add_parser("export-synth", help="write synthetic worlds as a video dataset: mp4 files + questions in a "
                       "dataset format (ovo, streamingbench, llava)")
    p.add_argument("--out", required=True, help="folder to write (videos/ and <format>.json)")
    p.add_argument("--format", required=True, choices=("ovo", "streamingbench", "llava"))
    p.add_argument("--videos", type=int, default=4)
    p.add_argument("--seconds", type=float, default=120.0, help="length of each video")
    p.add_argument("--questions", type=int, default=6, help="questions per video")
    p.add_argument("--fps", type=float, default=2.0)
    p.add_argument("--size", type=int, default=64, help="frame side in pixels")
    p.add_argument("--first-seed", type=int, default=0, help="world seed of the first video (training worlds are "
                   "0 .. train.train_seeds - 1)")
    p.set_defaults(func=cmd_export_synth)
    args = ap.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())

"""Alert latency (an event in the world -> its webhook received) and search latency over 24 h of memory,
through the real service: local Ray, the gateway over HTTP, live synthetic cameras, a real webhook receiver.

1. Each of `--streams` streams starts with 24 h of memory, built directly (not streamed for 24 h): the
   cubes of 600 s of a synthetic world through the shipped encoder, repeated with shifted times up to 24 h,
   into the profile's RollingMemory (merging as a live one does) and written to the stream's store, which
   the service restores when the stream is added.
2. The streams then go live (one-lane synthetic worlds, `--speed` times real time), `--watched` of them
   with a watch ("How many objects are in view?", fires on 1-3, clear_s 4 s, no cool-down, added once the
   stream's first live cube is in), and an aiohttp receiver takes the webhooks. An alert's latency is its receipt time minus the wall time at which the episode it
   reports began in the world (the first object entering an empty scene), the world's time 0 being the
   moment the stream was added (+- half the add call, printed).
3. Searches ("When did a <colour> <shape> last enter?") over every stream, then over one, timed at the client.

Run: .venv/bin/python bench/bench_alerts.py [--streams 16] [--seconds 180] [--speed 1]
"""
from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import random
import shutil
import statistics
import tempfile
import threading
import time

import torch
from aiohttp import web

from actors.client import Client
from actors.server import Service
from actors.worker import load_models
from configs import load_config
from models import StreamEncoder
from models.synthetic.evaluate import stream_world
from stream.memory import RollingMemory
from stream.snapshot import MemoryStore
from stream.synth import COLOURS, ENTER_S, SHAPES, SynthWorld

DAY = 86400.0


def day_memory(cfg, cubes: list) -> RollingMemory:
    """24 h of memory: the given cubes repeated with shifted times, merging as a live memory does."""
    memory = RollingMemory(cubes[0].stream_id, cfg.memory.token_budget, cfg.memory.max_thumbnail_bytes)
    span = cubes[-1].end + 0.5
    offset, index = 0.0, 0
    while offset + span <= DAY:
        for c in cubes:
            memory.add(dataclasses.replace(c, index=index, start=c.start + offset, end=c.end + offset))
            index += 1
        offset += span
    return memory


def write_store(cfg, memory: RollingMemory, stream_id: str, root: str) -> None:
    """`memory` as `stream_id`'s store, which the service restores when the stream is added."""
    store = MemoryStore(root, stream_id, cfg.memory)
    store.load()
    store.compact(RollingMemory.from_state(memory.state() | {"stream_id": stream_id}))
    store.close()


CLEAR_S = 4.0  # the watches' clear_s: an object entering a scene empty this long is a new event


def episode_starts(world: SynthWorld, until: float, apart: float = CLEAR_S) -> list[float]:
    """When the scene went from empty (for at least `apart` s) to an object entering."""
    starts, last_gone = [], -1e9
    for e in world.events_until(until):
        if e.kind == "enter":
            if e.t - last_gone >= apart:
                starts.append(e.t)
        elif e.kind == "leave":
            last_gone = e.t + ENTER_S
    return starts


class Receiver:
    def __init__(self):
        self.got: dict[int, tuple[float, dict]] = {}
        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self.loop.run_forever, daemon=True).start()
        self.port = asyncio.run_coroutine_threadsafe(self._start(), self.loop).result()

    async def _start(self) -> int:
        app = web.Application()
        app.router.add_post("/hook", self.hook)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        return self.runner.addresses[0][1]

    async def hook(self, request):
        event = json.loads(await request.read())
        self.got[event["id"]] = (time.time(), event)
        return web.Response(status=204)


def pct(values: list[float], q: float) -> float:
    return sorted(values)[min(len(values) - 1, int(q * len(values)))] if values else float("nan")


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--config", default="default")
    ap.add_argument("--streams", type=int, default=16, help="streams live, each with 24 h of memory")
    ap.add_argument("--watched", type=int, default=4, help="of them, how many have a watch (alert latency)")
    ap.add_argument("--seconds", type=float, default=180.0, help="wall seconds the live cameras run for alerts")
    ap.add_argument("--speed", type=float, default=1.0, help="the cameras' pace, times real time")
    ap.add_argument("--queries", type=int, default=10)
    args = ap.parse_args()
    torch.set_num_threads(1)
    snapshots = tempfile.mkdtemp(prefix="bench-alerts-")
    receiver = Receiver()
    cfg = load_config(args.config, overrides={
        "runtime": {"snapshot_dir": snapshots, "request_timeout": 600.0},
        "server": {"port": 0},
        "api": {"webhooks": [{"url": f"http://127.0.0.1:{receiver.port}/hook", "secret": "bench"}]}})

    started = time.perf_counter()
    encoder, _ = load_models(cfg)
    with torch.no_grad():
        cubes = stream_world(StreamEncoder(encoder.eval()), SynthWorld(seed=3, width=64, height=64), 600.0)
    ids = [f"cam{i:02d}" for i in range(args.streams)]
    memory = day_memory(cfg, cubes)
    for sid in ids:
        write_store(cfg, memory, sid, snapshots)
    print(f"built 24 h of memory ({len(memory)} entries, levels {memory.levels()}) for {args.streams} streams in "
          f"{time.perf_counter() - started:.0f} s ({len(cubes)} cubes of 600 s repeated)")

    with Service(cfg, num_cpus=2, token="bench") as svc:
        c = Client(svc.url, "bench", timeout=600)
        starts, worlds, add_s = {}, {}, []
        for i, sid in enumerate(ids):
            seed = 100 + i
            worlds[sid] = SynthWorld(seed=seed, width=64, height=64, lanes=1)
            t0 = time.time()
            c.add(sid, f"synth://?seed={seed}&lanes=1&fps=4&speed={args.speed:g}&width=64&height=64")
            t1 = time.time()
            starts[sid] = (t0 + t1) / 2
            add_s.append(t1 - t0)
        entries = {s["id"]: s["encoder_counters"].get("entries") for s in c.streams()}
        # a watch starts at its stream's newest cube: wait for the first live one, not the built memory's last
        watched, watch_from = ids[:args.watched], {}
        for i, sid in enumerate(watched):
            while c.timeline(sid)[-1]["end"] <= memory.newest_time:
                time.sleep(0.2)
            c.add_watch(sid, "How many objects are in view?", answer=["1", "2", "3"], id=f"w{i}", clear_s=CLEAR_S,
                        cooldown_s=0)
            watch_from[sid] = (time.time() - starts[sid]) * args.speed  # world time the watch began
        print(f"{args.streams} streams live at {args.speed:g}x, each restored with {min(entries.values())}-"
              f"{max(entries.values())} memory entries, {args.watched} watched; add call {statistics.median(add_s):.2f} s "
              f"median (world time 0 known to +-half of it)")
        time.sleep(args.seconds)

        latencies, unmatched, in_progress = [], 0, 0
        for received, e in receiver.got.values():
            sid = e["stream"]
            world_at_receipt = (received - starts[sid]) * args.speed
            began = [t for t in episode_starts(worlds[sid], world_at_receipt) if t <= world_at_receipt]
            if not began or (received - (starts[sid] + began[-1] / args.speed)) > 60:
                unmatched += 1  # no object entered an empty scene in the minute before it: a false alert
            elif began[-1] < watch_from[sid]:
                in_progress += 1  # the object was in view when the watch was added
            else:
                latencies.append(received - (starts[sid] + began[-1] / args.speed))
        end = args.seconds * args.speed
        due = sum(len([t for t in episode_starts(worlds[sid], end) if watch_from[sid] <= t < end - 30 * args.speed])
                  for sid in watched)
        print(f"\nalerts over {args.seconds:g} s: {len(receiver.got)} webhooks received: {len(latencies)} matched to an "
              f"episode of the world that began after its watch ({due} began more than 30 s before the end), "
              f"{in_progress} for an object in view when the watch was added, {unmatched} unmatched (false)")
        print(f"{'':28} {'p50':>8} {'p95':>8} {'n':>5}")
        print(f"{'alert latency (s, wall)':28} {pct(latencies, 0.5):8.2f} {pct(latencies, 0.95):8.2f} {len(latencies):5}")

        rng = random.Random(0)
        queries = [f"When did a {rng.choice(list(COLOURS))} {rng.choice(SHAPES)} last enter?" for _ in range(args.queries)]
        rows = []
        for label, streams in ((f"search, {args.streams} streams x 24 h", None), ("search, 1 stream x 24 h", [ids[0]])):
            times = []
            for q in queries:
                t0 = time.perf_counter()
                results = c.search(q, streams=streams, limit=10)
                times.append(time.perf_counter() - t0)
                assert results
            rows.append((label, times))
        total = sum(entries.values())
        print(f"\nsearch over {total} memory entries in all (24 h each, plus what came in live), {args.queries} queries")
        print(f"{'':28} {'p50':>8} {'p95':>8}")
        for label, times in rows:
            print(f"{label:28} {pct(times, 0.5):8.2f} {pct(times, 0.95):8.2f}")
    shutil.rmtree(snapshots, ignore_errors=True)


if __name__ == "__main__":
    main()

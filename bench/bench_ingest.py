"""Ingest at camera scale: real 720p H.264 cameras over RTSP into the runtime, against the decode-bound limit.

In one run:
1. a 1280x720 15 fps H.264 clip (x264 veryfast, 2 Mb/s, a keyframe a second, no B-frames, sensor-like
   noise) made with PyAV, cached under ~/.cache/cubestream/bench/ (or --clip);
2. the decode-bound limit: one thread decoding the clip (frames/s, wall and per CPU second), times the
   cores, over the camera's 15 fps: how many such cameras the cores could decode and nothing else; and,
   to see where the runtime's CPU goes, the same decode as the ingest does it (without deblocking:
   source.skip_loop_filter), back to back and paced as cameras deliver frames (cold caches after each wait).
   This machine's speed drifts by up to a quarter within minutes, so the limit is measured again (--probe
   seconds of the same decode, the runtime idle) before each step and after the last: each step is judged
   against the mean of the measurements on either side of it, the steps are chosen from the first;
3. a real RTSP server (gst-rtsp-server, bench/rtsp_file_server.py) streaming the file as it is to every
   reader, each with a pipeline of its own;
4. the runtime (local Ray, default profile, `cubestream serve`'s controller and actors) with N cameras, in
   steps (fresh cameras each step): per step, over --seconds after --warmup:
   - sustained: cameras with >= 90% of their frames decoded, >= 90% of the sample rate, nothing dropped
     or skipped;
   - frame-to-memory p50/p95 (a frame's packet read from the camera -> the frame in its stream's memory:
     decode bursts, the decode gate, sampling, batching and the encoder) and the decode lag p95 (how far
     behind real time the cameras were decoded, what source.max_lag bounds); the cameras not sustained
     are named with their counts;
   - encoded frames/s; CPU (cores busy, the RTSP server apart) and CPU ms per camera-second;
   - resident memory per stream: the ingest workers' RSS over N, and all the runtime's processes' over N.
The last lines compare with the goals: sustained >= 70% of the limit, <= 40 MB per stream, p95 < 1 s at
80% of capacity, at 1.5x capacity encoded frames/s >= 90% of the best step's. On a machine shared with
other work the wall-clock limit and the steps measure that load too: the CPU ms per camera-second and the
projection from it (cores / CPU per camera) depend on it less.

Run (Linux: reads /proc; needs /usr/bin/python3 with gi and gst-rtsp-server):
    .venv/bin/python bench/bench_ingest.py                        # steps at 0.25..1.5 of the measured limit
    .venv/bin/python bench/bench_ingest.py --streams 8,16,32      # explicit steps
Flags: --fractions, --streams, --warmup, --seconds, --probe, --cores, --clip, and --set KEY=VALUE for any config value
(runtime.ingest_workers=2, source.skip_loop_filter=false, runtime.batch_wait=0, ...).
"""
from __future__ import annotations

import argparse
import math
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path

import av
import numpy as np
import ray

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from actors.cli import settings  # noqa: E402
from actors.runtime import start_controller  # noqa: E402
from configs import load_config  # noqa: E402

WIDTH, HEIGHT, FPS, GOP_SECONDS = 1280, 720, 15, 10  # the clip: one encoded stretch, repeated without re-encoding
SERVER = Path(__file__).with_name("rtsp_file_server.py")
CACHE = Path("~/.cache/cubestream/bench").expanduser()
CLK = os.sysconf("SC_CLK_TCK")


# -- the clip --------------------------------------------------------------------------------------

def make_clip(path: Path, seconds: int) -> None:
    """`seconds` of 720p15 H.264: GOP_SECONDS encoded once (moving blocks over a gradient with per-frame
    noise, so the encoder spends its bitrate as on a camera's sensor), then its packets repeated."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:HEIGHT, 0:WIDTH]
    bg = np.stack([xx * 200 // WIDTH + 30, yy * 180 // HEIGHT + 40, (xx + yy) * 100 // (WIDTH + HEIGHT) + 60], -1)
    noisy = [np.clip(bg + rng.normal(0, 4, bg.shape), 0, 255).astype(np.uint8) for _ in range(8)]
    part = path.with_suffix(".part.mp4")
    with av.open(str(part), "w") as out:
        # a keyframe each second whatever the noise does to x264's scene-cut test (a camera's fixed GOP)
        s = out.add_stream("libx264", rate=FPS, options={
            "preset": "veryfast", "x264-params": f"keyint={FPS}:min-keyint={FPS}:scenecut=0:bframes=0",
            "b": "2000000", "maxrate": "2000000", "bufsize": "2000000"})
        s.width, s.height, s.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        for i in range(GOP_SECONDS * FPS):
            img = noisy[i % len(noisy)].copy()
            for k in range(3):
                x = (i * (4 + 3 * k)) % (WIDTH - 120)
                img[100 + 200 * k:200 + 200 * k, x:x + 120] = (200, 60 + 60 * k, 40)
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            frame.pts = i
            out.mux(s.encode(frame))
        out.mux(s.encode())
    with av.open(str(part)) as src, av.open(str(path), "w") as out:
        ins = src.streams.video[0]
        packets = [p for p in src.demux(ins) if p.size]
        span = packets[-1].pts - packets[0].pts + (packets[1].pts - packets[0].pts)
        o = out.add_stream_from_template(ins)
        for r in range(-(-seconds // GOP_SECONDS)):
            for p in packets:
                q = av.Packet(bytes(p))
                q.pts, q.dts, q.is_keyframe, q.time_base, q.stream = p.pts + r * span, p.dts + r * span, p.is_keyframe, p.time_base, o
                out.mux(q)
    part.unlink()


def decode_rate(path: Path, skip_loop_filter: bool = False, seconds: float = 10.0) -> tuple[float, float]:
    """(frames/s on the wall clock, frames per CPU second) of one thread decoding the clip (no conversion
    of the frames, as the ingest does with those it does not sample): to the standard, or as the ingest
    decodes with source.skip_loop_filter."""
    n, wall, cpu = 0, time.perf_counter(), time.thread_time()
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        s.codec_context.thread_count = 1
        if skip_loop_filter:
            s.codec_context.options = {"skip_loop_filter": "all"}
        for _ in c.decode(s):
            n += 1
            if time.perf_counter() - wall > seconds:
                break
    return n / (time.perf_counter() - wall), n / (time.thread_time() - cpu)


def paced_rate(path: Path, cameras: int, cores: int, seconds: float = 10.0) -> float:
    """Frames per CPU second of `cameras` threads each decoding the clip as a camera delivers it (a frame
    every 1/FPS s, the threads staggered), at most `cores` at once: a decoder that sleeps between frames
    finds its caches cold, so this costs more per frame than decoding back to back (decode_rate)."""
    gate, counts = threading.BoundedSemaphore(cores), [0] * cameras

    def camera(i: int) -> None:
        with av.open(str(path)) as c:
            s = c.streams.video[0]
            s.codec_context.thread_count = 1
            s.codec_context.options = {"skip_loop_filter": "all"}
            t0 = time.monotonic() + i / cameras / FPS
            for k, packet in enumerate(c.demux(s)):
                if (ahead := t0 + k / FPS - time.monotonic()) > 0:
                    time.sleep(ahead)
                if time.monotonic() - t0 > seconds:
                    break
                with gate:
                    counts[i] += len(packet.decode())

    threads = [threading.Thread(target=camera, args=(i,)) for i in range(cameras)]
    cpu = time.process_time()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(counts) / (time.process_time() - cpu)


# -- processes -------------------------------------------------------------------------------------

def descendants(root: int) -> dict[int, str]:
    """pid -> what it is, for every process under `root` (Ray's workers are the raylet's children)."""
    parent, names = {}, {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                parent[int(d.name)] = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
                names[int(d.name)] = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except (OSError, IndexError, ValueError):
                pass
    out, frontier = {}, [root]
    while frontier:
        p = frontier.pop()
        for child, par in parent.items():
            if par == p and child not in out:
                out[child] = kind(names.get(child, ""))
                frontier.append(child)
    return out


KINDS = ("ingest", "encoder", "controller", "llm", "gcs", "raylet", "ray other")  # the runtime's processes


def kind(cmdline: str) -> str:
    for key, name in (("rtsp_file_server", "rtsp server"), ("IngestWorker", "ingest"), ("EncoderActor", "encoder"),
                      ("gcs_server", "gcs"), ("raylet", "raylet"), ("LLMActor", "llm"), ("Controller", "controller")):
        if key in cmdline:
            return name
    return "ray other"  # the dashboard head and agents, log monitor, autoscaler monitor


def cpu_seconds(pid: int) -> float:
    try:
        f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(f[11]) + int(f[12])) / CLK
    except (OSError, IndexError, ValueError):
        return 0.0


def memory_mb(pid: int, field: str) -> float:
    """A process's VmRSS (/proc/PID/status: every page it maps, libraries it shares counted in full) or Pss
    (/proc/PID/smaps_rollup: each shared page divided among the processes that map it, so that the Pss of
    a set of processes sums to the memory they use together)."""
    path = f"/proc/{pid}/status" if field == "VmRSS" else f"/proc/{pid}/smaps_rollup"
    try:
        for line in Path(path).read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def read_counters(controller, ids: list[str]) -> dict[str, dict]:
    """Per stream: its ingest's source counters and its encoder's counters, asked of the workers themselves
    with a long timeout: an overloaded worker answers late, and a missing answer must fail the step, not
    read as zero."""
    workers, encoders = defaultdict(list), defaultdict(list)
    for sid in ids:
        workers[ray.get(controller.ingest_of.remote(sid), timeout=60)].append(sid)
        encoders[ray.get(controller.encoder_of.remote(sid), timeout=60)].append(sid)
    sources, encoded = {}, {}
    for w, sids in workers.items():
        sources |= ray.get(w.statuses.remote(sids), timeout=120)
    for e, sids in encoders.items():
        encoded |= ray.get(e.counters.remote(sids), timeout=120)
    return {sid: {"source": sources[sid], "encoder_counters": encoded[sid]} for sid in ids}


# -- one step --------------------------------------------------------------------------------------

def run_step(controller, url: str, n: int, step: int, args) -> dict:
    ids = [f"cam{step}x{i}" for i in range(n)]
    for sid in ids:
        ray.get(controller.add_stream.remote(sid, url), timeout=120)
    time.sleep(args.warmup)
    everything = descendants(os.getpid())
    procs = {p: k for p, k in everything.items() if k != "rtsp server"}  # the runtime's; not this driver
    servers = [p for p, k in everything.items() if k == "rtsp server"]
    server0 = sum(cpu_seconds(p) for p in servers)
    before = read_counters(controller, ids)
    cpu0, t0 = {p: cpu_seconds(p) for p in procs}, time.monotonic()
    lags = []
    while time.monotonic() - t0 < args.seconds:
        time.sleep(1.0)
        lags += [s["source"].get("lag", 0.0) for s in ray.get(controller.list_streams.remote(), timeout=60)]
    elapsed = time.monotonic() - t0
    busy = {k: sum(cpu_seconds(p) - cpu0[p] for p, kk in procs.items() if kk == k) / elapsed for k in KINDS}
    cpu = sum(busy.values()) * elapsed
    busy["rtsp server"] = (sum(cpu_seconds(p) for p in servers) - server0) / elapsed
    after = read_counters(controller, ids)
    ingest_pids = {ray.get(ray.get(controller.ingest_of.remote(sid)).__ray_call__.remote(lambda a: os.getpid()))
                   for sid in ids}
    rss_ingest = sum(memory_mb(p, "VmRSS") for p in ingest_pids)
    rss_all = sum(memory_mb(p, "VmRSS") for p in procs)
    pss_all = sum(memory_mb(p, "Pss") for p in procs)
    counters = {sid: after[sid]["encoder_counters"] for sid in ids}

    def delta(sid, *path):
        a, b = before[sid], after[sid]
        for key in path:
            a, b = a.get(key, 0), b.get(key, 0)
        return b - a

    # the frames encoded in the window: the newest of each stream's last 1000 latencies
    latencies = np.concatenate([np.asarray(counters[sid]["latencies"][-delta(sid, "encoder_counters", "frames"):])
                                for sid in ids if sid in counters and delta(sid, "encoder_counters", "frames") > 0]
                               or [np.zeros(0)])

    decoded = np.array([delta(sid, "source", "frames_decoded") for sid in ids]) / (FPS * elapsed)
    sampled = np.array([delta(sid, "source", "frames_sampled") for sid in ids]) / (args.fps * elapsed)
    lost = np.array([delta(sid, "source", "frames_dropped") + delta(sid, "source", "frames_skipped") for sid in ids])
    encoded = sum(delta(sid, "encoder_counters", "frames") for sid in ids) / elapsed
    sustained = int(np.sum((decoded >= 0.9) & (sampled >= 0.9) & (lost == 0)))
    for k in np.flatnonzero((decoded < 0.9) | (sampled < 0.9) | (lost > 0))[:5]:  # a few cameras not sustained
        sid, src = ids[k], after[ids[k]]["source"]
        print(f"    {sid}: {src.get('state')}, {delta(sid, 'source', 'reconnects')} reconnects, decoded {decoded[k]:.0%}, "
              f"sampled {sampled[k]:.0%}, dropped {delta(sid, 'source', 'frames_dropped')}, skipped "
              f"{delta(sid, 'source', 'frames_skipped')}, lag {src.get('lag', 0):.2f} s; last error: {src.get('last_error')}",
              flush=True)
    for sid in ids:
        ray.get(controller.remove_stream.remote(sid), timeout=120)
    return {"n": n, "sustained": sustained, "decoded": float(np.median(decoded)), "sampled": float(np.median(sampled)),
            "lost": int(lost.sum()), "p50": float(np.percentile(latencies, 50)) if latencies.size else float("nan"),
            "p95": float(np.percentile(latencies, 95)) if latencies.size else float("nan"),
            "lag95": float(np.percentile(lags, 95)) if lags else float("nan"), "encoded": encoded,
            "cores": cpu / elapsed, "cpu_ms_per_cam_s": 1e3 * cpu / elapsed / n, "busy": busy,
            "rss_ingest": rss_ingest / n, "rss_all": rss_all / n, "pss_all": pss_all / n, "workers": len(ingest_pids)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fractions", default="0.25,0.5,0.6,0.7,0.75,0.8,0.9,1.0,1.1,1.5",
                    help="steps as fractions of the measured limit (each rounded up: a step named 0.7 is at least 70%%)")
    ap.add_argument("--streams", default=None, help="explicit steps (camera counts), instead of --fractions")
    ap.add_argument("--warmup", type=float, default=10.0, help="seconds after adding a step's cameras before measuring")
    ap.add_argument("--seconds", type=float, default=20.0, help="seconds measured per step")
    ap.add_argument("--probe", type=float, default=3.0, help="seconds of decode that measure the limit between steps")
    ap.add_argument("--cores", type=int, default=os.cpu_count(), help="cores for Ray and for the limit")
    ap.add_argument("--clip", type=Path, default=None, help="an H.264 MP4 to serve instead of the generated clip")
    ap.add_argument("--set", action="append", metavar="KEY=VALUE",
                    help="override a config value, e.g. runtime.ingest_workers=2 or source.skip_loop_filter=false")
    args = ap.parse_args()

    clip_seconds = int(args.warmup + args.seconds + 30)
    clip = args.clip or CACHE / f"cam720p15_{clip_seconds}s.mp4"
    if not clip.exists():
        clip.parent.mkdir(parents=True, exist_ok=True)
        print(f"making {clip} ...", flush=True)
        make_clip(clip, clip_seconds)
    cfg = load_config(overrides=settings(args.set))
    rate_wall, rate_cpu = decode_rate(clip)  # the limit: the standard decode
    limit, limit_cpu = args.cores * rate_wall / FPS, args.cores * rate_cpu / FPS
    # the same, decoded as the ingest decodes (without deblocking unless source.skip_loop_filter=false)
    own_cpu = decode_rate(clip, cfg.source.skip_loop_filter)[1] if cfg.source.skip_loop_filter else rate_cpu
    paced = paced_rate(clip, round(0.6 * limit), args.cores) if cfg.source.skip_loop_filter else None
    load = os.getloadavg()[0]
    print(f"decode-bound limit: one thread decodes {rate_wall:.0f} frames/s (wall; {rate_cpu:.0f} per CPU second) -> "
          f"{args.cores} cores: {limit:.1f} cameras at {FPS} fps ({limit_cpu:.1f} by CPU time); load average {load:.1f}",
          flush=True)
    if cfg.source.skip_loop_filter:
        print(f"as the ingest decodes (source.skip_loop_filter): {own_cpu:.0f} frames per CPU second "
              f"({own_cpu / rate_cpu:.2f}x); paced as {round(0.6 * limit)} cameras deliver them: {paced:.0f}", flush=True)
    steps = [int(s) for s in args.streams.split(",")] if args.streams else \
        sorted({max(1, math.ceil(f * limit)) for f in map(float, args.fractions.split(","))})

    port = 20000 + os.getpid() % 20000
    server = subprocess.Popen(["/usr/bin/python3", str(SERVER), str(port), str(clip)], stdout=subprocess.PIPE, text=True)
    assert server.stdout.readline().strip() == "ready", "bench/rtsp_file_server.py did not start"
    rows = []
    try:
        with tempfile.TemporaryDirectory() as snapshots:
            cfg.runtime.snapshot_dir = snapshots
            args.fps = cfg.sampler.fps
            ray.init(num_cpus=args.cores, include_dashboard=False, log_to_driver=False)
            controller = start_controller(cfg)
            idle = defaultdict(float)  # MB PSS of the runtime's processes before any camera, by kind
            for p, k in descendants(os.getpid()).items():
                if k != "rtsp server":
                    idle[k] += memory_mb(p, "Pss")
            rates = [decode_rate(clip, seconds=args.probe)[0]]
            for step, n in enumerate(steps):
                r = run_step(controller, f"rtsp://127.0.0.1:{port}/cam", n, step, args)
                time.sleep(1.0)  # the step's cameras closing
                rates.append(decode_rate(clip, seconds=args.probe)[0])
                r["rate"] = (rates[-2] + rates[-1]) / 2  # the machine's speed around the step
                r["limit"] = args.cores * r["rate"] / FPS
                rows.append(r)
                print(f"  {n} cameras ({n / r['limit']:.2f} of the limit then, {r['limit']:.1f}): {r['sustained']} "
                      f"sustained, encoded {r['encoded']:.1f}/s, p95 {r['p95'] * 1e3:.0f} ms, {r['cores']:.2f} cores",
                      flush=True)
            ray.kill(controller)
            ray.shutdown()
    finally:
        server.kill()
        server.wait()
    report(rows, args, limit, rate_cpu, own_cpu, paced, load, idle)


def report(rows: list[dict], args, limit: float, rate_cpu: float, own_cpu: float, paced: float | None,
           load: float, idle: dict[str, float]) -> None:
    print(f"\n720p {FPS} fps H.264 cameras over RTSP (127.0.0.1), sampled at {args.fps:g} fps; {args.cores} cores; "
          f"limit {limit:.1f} cameras at the start, {min(r['limit'] for r in rows):.1f}-{max(r['limit'] for r in rows):.1f} "
          f"around the steps (decode-bound, measured in this run); load average at start {load:.1f}")
    head = ("cameras", "limit then", "x limit", "sustained", "decoded", "sampled", "dropped+skipped", "f->mem p50 ms", "p95 ms",
            "decode lag p95 s", "encoded f/s", "cores busy", "CPU ms/cam-s", "ingest RSS/stream MB",
            "all RSS/stream MB", "all PSS/stream MB")
    print("| " + " | ".join(head) + " |")
    print("|" + "---:|" * len(head))
    for r in rows:
        print(f"| {r['n']} | {r['limit']:.1f} | {r['n'] / r['limit']:.2f} | {r['sustained']} | {r['decoded']:.0%} | {r['sampled']:.0%} | {r['lost']} | "
              f"{r['p50'] * 1e3:.0f} | {r['p95'] * 1e3:.0f} | {r['lag95']:.2f} | {r['encoded']:.1f} | {r['cores']:.2f} | "
              f"{r['cpu_ms_per_cam_s']:.0f} | {r['rss_ingest']:.1f} | {r['rss_all']:.1f} | {r['pss_all']:.1f} |")
    running = [k for k in KINDS if k in idle]  # no LLM actor where runtime.llm_actors is 0: the encoder answers
    print("\ncores busy by process (the RTSP server apart):\n")
    print("| cameras | " + " | ".join(running) + " | (rtsp server) |")
    print("|" + "---:|" * (len(running) + 2))
    for r in rows:
        print(f"| {r['n']} | " + " | ".join(f"{r['busy'][k]:.2f}" for k in (*running, "rtsp server")) + " |")

    full = [r for r in rows if r["sustained"] == r["n"]]
    if not full:
        print("\nno step was sustained")
        return
    top = max(full, key=lambda r: r["n"])
    print(f"\nsustained: {top['n']} cameras = {top['n'] / top['limit']:.0%} of the limit measured around that step, "
          f"{top['limit']:.1f} ({top['n'] / limit:.0%} of the first measurement, {limit:.1f}) (goal >= 70%)")
    if failed := [r for r in rows if r["n"] < top["n"] and r["sustained"] < r["n"]]:  # capacity is not one line
        below = [r for r in rows if r["n"] < failed[0]["n"]]
        print("  but not every step below it: " + ", ".join(f"{r['n']} ({r['n'] / r['limit']:.2f} of the limit then) "
                                                         f"{r['sustained']} sustained" for r in failed) +
              (f"; every step up to {below[-1]['n']} = {below[-1]['n'] / below[-1]['limit']:.0%} of its limit then"
               if below else ""))
    # the decodes measured at the start, scaled to the machine's speed around the top step
    against = [("the standard decode", top["rate"])]
    if paced is not None:  # source.skip_loop_filter: the decode the ingest does, back to back and paced
        against += [("the decode as the ingest does it", top["rate"] * own_cpu / rate_cpu),
                    ("that decode paced as cameras deliver it", top["rate"] * paced / rate_cpu)]
    for name, per_s in against:
        lim = args.cores * per_s / FPS
        decode_ms = 1e3 * FPS / per_s
        print(f"against {name} ({decode_ms:.0f} ms of CPU a camera-second, {lim:.1f} cameras on {args.cores} cores):")
        print(f"  CPU per camera at {top['n']}: {top['cpu_ms_per_cam_s']:.0f} ms/s -> projected on idle cores: "
              f"{args.cores * 1e3 / top['cpu_ms_per_cam_s']:.1f} cameras = {args.cores * 1e3 / top['cpu_ms_per_cam_s'] / lim:.0%}")
        if len(full) > 1:  # CPU = fixed + per camera x n, over the sustained steps
            per_cam, fixed = np.polyfit([r["n"] for r in full], [1e3 * r["cores"] for r in full], 1)
            print(f"  CPU fit over the sustained steps: {fixed:.0f} ms/s fixed + {per_cam:.0f} ms/s per camera -> "
                  f"{(args.cores * 1e3 - fixed) / per_cam:.1f} cameras on idle cores = "
                  f"{(args.cores * 1e3 - fixed) / per_cam / lim:.0%}")
    near = min(rows, key=lambda r: abs(r["n"] - 0.8 * top["n"]))
    print(f"at ~80% of capacity ({near['n']} cameras): frame-to-memory p95 {near['p95']:.2f} s, "
          f"decode lag p95 {near['lag95']:.2f} s (goal < 1 s)")
    print(f"memory per stream at {top['n']}: ingest RSS {top['rss_ingest']:.1f} MB; all processes RSS "
          f"{top['rss_all']:.1f} MB, PSS {top['pss_all']:.1f} MB (goal <= 40 MB); above the idle runtime "
          f"{top['pss_all'] - sum(idle.values()) / top['n']:.1f} MB PSS")
    print(f"the idle runtime (no camera): {sum(idle.values()):.0f} MB PSS: " +
          ", ".join(f"{k} {idle[k]:.0f}" for k in KINDS if k in idle))
    if len(rows) > 1:
        a, b = rows[0], rows[-1]
        more = {k: (b[k] * b["n"] - a[k] * a["n"]) / (b["n"] - a["n"]) for k in ("rss_ingest", "rss_all", "pss_all")}
        print(f"each stream more ({a['n']} -> {b['n']} cameras): ingest RSS {more['rss_ingest']:.1f} MB, all processes "
              f"RSS {more['rss_all']:.1f} MB, PSS {more['pss_all']:.1f} MB")
    best = max(r["encoded"] for r in rows)
    for r in (r for r in rows if r["n"] >= 1.5 * top["n"]):
        print(f"at {r['n']} cameras ({r['n'] / top['n']:.1f}x capacity): encoded {r['encoded']:.1f} "
              f"frames/s = {r['encoded'] / best:.0%} of the best step's {best:.1f} (goal >= 90%)")


if __name__ == "__main__":
    main()

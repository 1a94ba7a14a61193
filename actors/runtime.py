"""Ray actors: thin shells over EncoderWorker, Ingest and AnswerWorker, and the controller that places them.

    controller = start_controller(cfg)          # after ray.init(); creates the encoders (and any LLM actors)
    await controller.add_stream.remote("cam1", "rtsp://...")

Placement: with `runtime.encoder_gpus > 0`, one encoder actor per GPU of every node that has GPUs, pinned
to its node; else `runtime.encoders` encoder actors spread over the nodes. Beside each encoder, on its
node, `runtime.ingest_workers` ingest workers: processes that each decode many streams on threads of
their own, reduce every sampled frame to the encoder's input size, and send all their streams' frames
for the encoder in one call. A stream goes to the encoder with the fewest streams, and to its ingest
worker with the fewest. Questions and searches go to the LLM actors in turn (`runtime.llm_actors`), or, where
that is 0 (the embedded default), to the encoders, which then load the answerer too: a question about a
stream is answered by the encoder that holds its memory, one process fewer holds torch and a model.

Recovery: every actor restarts (max_restarts=-1). A restarted encoder comes back empty; the stream's
ingest hears "unknown stream" on its next frame and re-attaches, which restores the stream's memory and
encoder state from its store (see actors/worker.py). An encoder whose node is gone cannot restart (it is
pinned there, and so are its ingest workers): the controller sees it dead and moves its streams to the
other encoders and their ingest workers, which reconnect to the cameras and restore the streams from
their stores. At every health check the controller sends each ingest worker the whole set of streams it
is to run, so a restarted worker (empty) starts them all again and reconnects. A whip:// stream's ingest
runs in the gateway, where its publisher connects (`add_stream(..., ingest=False)`); it finds its
encoder through the controller at every attach. Every call across actors has a timeout
(`runtime.request_timeout`), so no request waits forever. Task events are off for these actors: they
make thousands of calls a minute, whose records would otherwise pile up in Ray's GCS.
"""
from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from actors.batching import EncoderIntake, FrameBatcher
from actors.ingest import Ingest
from configs import Config
from stream.ids import check_stream_id
from stream.sources import open_source
from stream.sources.gate import DecodeGate

CONTROLLER = "cubestream-controller"


@ray.remote
class EncoderActor:
    """An EncoderWorker; frames from all its streams' ingest workers are batched together (one per stream)."""

    def __init__(self, cfg: Config):
        import torch

        from actors.worker import EncoderWorker, load_models

        ids = ray.get_runtime_context().get_accelerator_ids().get("GPU", [])
        device = "cuda" if ids and torch.cuda.is_available() else "cpu"
        torch.set_num_threads(max(1, int(cfg.runtime.encoder_cpus)))
        llm = None
        if cfg.model.vlm:  # a pretrained VLM's vision side
            from models.vlm.profile import build_stream_encoder

            model = build_stream_encoder(cfg, device)
        else:
            model, llm = load_models(cfg)
        self.worker = EncoderWorker(model, cfg, device)
        self.pool = ThreadPoolExecutor(1)  # the worker is used from one thread only, off the event loop
        self.intake = EncoderIntake(lambda items: self._call(self.worker.push, items), cfg.runtime.max_batch)
        self.answers = None
        if cfg.runtime.llm_actors == 0:  # this process answers too (the Controller sends it questions)
            from actors.answering import AnswerWorker, load_answerer

            self.answers = AnswerWorker(load_answerer(cfg, device, llm))
            self.answer_pool = ThreadPoolExecutor(1)  # one question at a time, beside the encoding

    async def push(self, stream_ids: list[str], images: list[np.ndarray], pts: list[float],
                   arrivals: list[float]) -> list:
        """Frames of many streams (an ingest worker's batch); per frame None (taken), why it was refused, or
        the exception that failed its pass. Each waits in its stream's queue for a pass (EncoderIntake)."""
        return await self.intake.submit(list(zip(stream_ids, images, pts, arrivals)))

    async def attach(self, stream_id: str) -> float | None:
        return await self._call(self.worker.add_stream, stream_id)

    async def remove_stream(self, stream_id: str, forget: bool = True) -> None:
        await self._call(self.worker.remove_stream, stream_id, forget)

    async def timeline(self, stream_id: str) -> list[dict]:
        await self.attach(stream_id)  # restarted since: restore before reading (the controller knows it is ours)
        return await self._call(self.worker.timeline, stream_id)

    async def window(self, stream_id: str, start: float | None, end: float | None) -> list:
        await self.attach(stream_id)
        return await self._call(self.worker.window, stream_id, start, end)

    async def thumbnail(self, stream_id: str, entry_id: int) -> bytes | None:
        await self.attach(stream_id)
        return await self._call(self.worker.thumbnail, stream_id, entry_id)

    async def counters(self, stream_ids: list[str] | None = None) -> dict:
        return await self._call(self.worker.stats, stream_ids)

    # A question only reads, so one cut off by a restart is sent again (as to an LLM actor); the other calls
    # are not: an ingest re-attaches its stream to a restarted encoder itself (see the module's docstring).
    @ray.method(max_task_retries=2)
    async def answer(self, entries: list, question: str, options: list | None = None) -> dict:
        """As LLMActor.answer, where runtime.llm_actors is 0."""
        return await self._answer(self.answers.answer, entries, question, options)

    @ray.method(max_task_retries=2)
    async def search(self, stream_ids: list[str], query: str, limit: int, *memories: list) -> dict:
        """As LLMActor.search, where runtime.llm_actors is 0."""
        return await self._answer(self.answers.search, stream_ids, query, limit, list(memories))

    def ping(self) -> str:
        return ray.get_runtime_context().get_node_id()

    async def _call(self, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(self.pool, fn, *args)

    async def _answer(self, fn, *args):
        if self.answers is None:
            raise RuntimeError("this encoder does not answer: runtime.llm_actors > 0")
        return await asyncio.get_running_loop().run_in_executor(self.answer_pool, fn, *args)


@ray.remote
class IngestWorker:
    """The Ingests of many streams in one process. Each stream decodes on a thread of its own (FFmpeg
    releases the GIL while it decodes) in bursts that take turns at the cores, its sampled frames reduced to the encoder's input size, and the
    frames of all its streams for one encoder go in one call (a FrameBatcher per encoder)."""

    def __init__(self, cfg: Config):
        # this thread runs the event loop, and the decoding threads it starts inherit its niceness
        os.nice(cfg.runtime.ingest_nice)  # decoding yields the cores to the encoders and the LLM (RuntimeConfig)
        self.cfg = cfg
        # at most as many streams decode at once as there are cores, the others in turn: past capacity they
        # wait (asleep), fall behind and shed frames alike, and the encoder, the LLM and Ray still find a core
        self.decode_gate = DecodeGate(cfg.runtime.ingest_decoders or len(os.sched_getaffinity(0)))
        self.ingests: dict[str, Ingest] = {}
        self.encoders: dict[object, RemoteEncoder] = {}  # encoder handle -> the target its streams share
        self._lock = asyncio.Lock()

    async def assign(self, streams: dict[str, tuple[str, object]]) -> None:
        """Run exactly these streams (id -> (spec, encoder handle)): start the new ones, send moved ones to
        their new encoder, close the others. The controller sends the whole set at every health check, so
        a restarted worker (empty) starts all its streams again, and a stream moved away stops here."""
        async with self._lock:  # calls apply in the order they were sent, each whole
            for sid in [sid for sid in self.ingests if sid not in streams]:
                await self.ingests.pop(sid).close()
            for sid, (spec, encoder) in streams.items():
                ingest = self.ingests.get(sid)
                if ingest is None:
                    try:
                        ingest = self.ingests[sid] = Ingest(sid, spec, self.cfg, decode_gate=self.decode_gate)
                    except ValueError:  # the controller checked the spec; never let one stream stop the rest
                        continue
                if encoder not in self.encoders:
                    self.encoders[encoder] = RemoteEncoder(encoder, self.cfg.runtime.request_timeout,
                                                           batch_wait=self.cfg.runtime.batch_wait)
                ingest.retarget(self.encoders[encoder])
                ingest.start()
            used = {ingest.target.handle for ingest in self.ingests.values()}
            self.encoders = {h: t for h, t in self.encoders.items() if h in used}

    def statuses(self, stream_ids: list[str]) -> dict[str, dict]:
        return {sid: self.ingests[sid].status() if sid in self.ingests else {"state": "connecting"} for sid in stream_ids}

    def stream_ids(self) -> list[str]:
        return list(self.ingests)

    def ping(self) -> str:
        return ray.get_runtime_context().get_node_id()

    async def close(self) -> None:
        async with self._lock:
            for ingest in self.ingests.values():
                await ingest.close()
            self.ingests.clear()


class RemoteEncoder:
    """An encoder actor as an Ingest target, every call bounded by the request timeout; frames go through a
    FrameBatcher, so the streams sharing this object share its calls. With `controller`, the stream's
    encoder is looked up at every attach, so a restarted or moved one is followed; without, it is
    `handle`, which the controller's health check replaces (IngestWorker.assign)."""

    def __init__(self, handle, timeout: float, controller=None, batch_wait: float = 0.0):
        self.handle, self.timeout, self.controller = handle, timeout, controller
        self.batcher = FrameBatcher(self._send, batch_wait)

    async def attach(self, stream_id):
        if self.controller is not None:
            self.handle = await asyncio.wait_for(self.controller.encoder_of.remote(stream_id), self.timeout)
        return await asyncio.wait_for(self.handle.attach.remote(stream_id), self.timeout)

    async def push(self, stream_id, image, pts, arrival):
        return await self.batcher.push(stream_id, image, pts, arrival)

    async def _send(self, stream_ids, images, pts, arrivals):
        # per frame None, a refusal, or the exception that failed its batched pass (raised to its Ingest)
        return await asyncio.wait_for(self.handle.push.remote(stream_ids, images, pts, arrivals), self.timeout)


@ray.remote
class LLMActor:
    """An AnswerWorker. Calls run one at a time (a synchronous actor): the model is the bottleneck anyway."""

    def __init__(self, cfg: Config):
        import torch

        from actors.answering import AnswerWorker, load_answerer

        torch.set_num_threads(1)
        device = "cuda" if cfg.runtime.llm_gpus and torch.cuda.is_available() else "cpu"
        self.worker = AnswerWorker(load_answerer(cfg, device))

    def answer(self, entries: list, question: str, options: list | None = None) -> dict:
        """entries: the stream's memory entries to consider (stream.memory.MemoryEntry), in time order."""
        return self.worker.answer(entries, question, options)

    def search(self, stream_ids: list[str], query: str, limit: int, *memories: list) -> dict:
        """The entries of the streams' memories (one list each, in the order of `stream_ids`) most relevant to
        `query`, best first (actors/search.py)."""
        return self.worker.search(stream_ids, query, limit, list(memories))


class RequestError(ValueError):
    """A request the runtime refuses (the gateway answers 400); `status` 404 for an unknown stream."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


@dataclass
class _Stream:
    spec: str
    encoder: int  # index into Controller.encoders
    ingest: int | None  # index into Controller.ingests[encoder]; None where the caller runs the ingest (whip://)
    added: float


@ray.remote
class Controller:
    """Owns placement: the encoder and LLM actors, which stream runs where, and the health checks."""

    def __init__(self, cfg: Config):
        self.cfg = cfg
        rt = cfg.runtime
        self.timeout = rt.request_timeout
        self.encoders: list = []
        self.encoder_nodes: list[str | None] = []
        self.dead: set[int] = set()
        restart = dict(max_restarts=-1, max_task_retries=0, enable_task_events=False)
        # A model process allocates on several threads (the encoding, the answers, Ray's); with glibc's default of
        # an arena per thread its memory crept up ~25 MB in a 30-minute soak with questions, with 2 it held
        model_env = {"env_vars": {"MALLOC_ARENA_MAX": "2"}}
        if rt.encoder_gpus > 0:
            gpu_nodes = [n for n in ray.nodes() if n["Alive"] and n["Resources"].get("GPU", 0) > 0]
            if not gpu_nodes:
                raise RuntimeError("runtime.encoder_gpus > 0 but the cluster has no GPU node")
            for n in gpu_nodes:
                for _ in range(int(n["Resources"]["GPU"] // rt.encoder_gpus)):
                    self.encoders.append(EncoderActor.options(
                        num_cpus=rt.encoder_cpus, num_gpus=rt.encoder_gpus, runtime_env=model_env, **restart,
                        scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)).remote(cfg))
                    self.encoder_nodes.append(n["NodeID"])
        else:
            for _ in range(rt.encoders):
                self.encoders.append(EncoderActor.options(num_cpus=rt.encoder_cpus, scheduling_strategy="SPREAD",
                                                          runtime_env=model_env, **restart).remote(cfg))
                self.encoder_nodes.append(None)
        self.llms = [LLMActor.options(num_cpus=0, num_gpus=rt.llm_gpus, max_restarts=-1, max_task_retries=2,
                                      enable_task_events=False, runtime_env=model_env).remote(cfg)
                     for _ in range(rt.llm_actors)]
        self.ingests: list[list] = []  # per encoder, its ingest workers (created in ready(), on its node)
        self.next_llm = 0
        self.streams: dict[str, _Stream] = {}
        self.moves = 0
        self._monitor: asyncio.Task | None = None

    async def ready(self) -> list[str]:
        """Wait until every encoder and LLM actor is up; returns the encoders' node ids."""
        nodes = await asyncio.gather(*(e.ping.remote() for e in self.encoders))
        await asyncio.gather(*(llm.__ray_ready__.remote() for llm in self.llms))
        self.encoder_nodes = list(nodes)
        if not self.ingests:
            # Pinned where the encoder is pinned (they go with its node, and their streams move with it);
            # else near it, wherever Ray restarts them.
            pinned = self.cfg.runtime.encoder_gpus > 0
            self.ingests = [[IngestWorker.options(
                num_cpus=0, max_restarts=-1, max_task_retries=0, enable_task_events=False,
                scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=not pinned)).remote(self.cfg)
                for _ in range(self.cfg.runtime.ingest_workers)] for node in nodes]
            await asyncio.gather(*(w.__ray_ready__.remote() for ws in self.ingests for w in ws))
        if self._monitor is None:
            self._monitor = asyncio.create_task(self._health_loop())
        return list(nodes)

    # -- streams ------------------------------------------------------------------------------------

    async def add_stream(self, stream_id: str, spec: str, ingest: bool = True) -> dict:
        """Place a stream; with `ingest`, also run its ingest (on an ingest worker) for `spec`, else the caller feeds it."""
        try:
            check_stream_id(stream_id)
            if ingest:  # a malformed spec is refused here, before any actor hears of it
                open_source(spec, self.cfg.source).close()
        except ValueError as e:
            raise RequestError(str(e)) from None
        if stream_id in self.streams:
            raise RequestError(f"stream {stream_id!r} exists", status=409)
        encoder = self._least_loaded()
        self.streams[stream_id] = _Stream(spec, encoder, self._least_loaded_ingest(encoder) if ingest else None,
                                          time.time())
        await self._bounded(self.encoders[encoder].attach.remote(stream_id))
        if ingest:
            await self._assign(encoder, self.streams[stream_id].ingest)
        return await self.stream(stream_id)

    async def remove_stream(self, stream_id: str) -> None:
        s = self._get(stream_id)
        del self.streams[stream_id]
        if s.ingest is not None:
            with contextlib.suppress(Exception):  # a worker that is down drops it at its next assign
                await self._assign(s.encoder, s.ingest)
        await self._bounded(self.encoders[s.encoder].remove_stream.remote(stream_id, True))

    async def save_all(self) -> None:
        """Before the service stops: stop the health checks and every ingest worker's streams, then have each
        stream's encoder save its state and close its store (its files stay), so that a restart resumes each
        stream where it stopped."""
        if self._monitor is not None:
            self._monitor.cancel()  # it would start the ingests again
        await asyncio.gather(*(self._bounded(w.close.remote()) for ws in self.ingests for w in ws), return_exceptions=True)
        await asyncio.gather(*(self._bounded(self.encoders[s.encoder].remove_stream.remote(sid, False))
                               for sid, s in self.streams.items()), return_exceptions=True)

    async def list_streams(self) -> list[dict]:
        return await self._describe(list(self.streams))

    async def stream(self, stream_id: str) -> dict:
        self._get(stream_id)
        return (await self._describe([stream_id]))[0]

    async def _describe(self, stream_ids: list[str]) -> list[dict]:
        """The streams' states and counters, asked of each ingest worker and encoder once for all of its
        streams (a page polling the list of many cameras costs one call per actor, not one per stream)."""
        placed = {sid: self.streams[sid] for sid in stream_ids}
        by_ingest, by_encoder = defaultdict(list), defaultdict(list)
        for sid, s in placed.items():
            by_encoder[s.encoder].append(sid)
            if s.ingest is not None:
                by_ingest[s.encoder, s.ingest].append(sid)
        limit = min(5.0, self.timeout)

        async def statuses(encoder: int, slot: int, sids: list[str]) -> dict[str, dict]:
            try:
                return await self._bounded(self.ingests[encoder][slot].statuses.remote(sids), timeout=limit)
            except Exception as e:
                return {sid: {"state": "unavailable", "last_error": repr(e)} for sid in sids}

        async def counters(encoder: int, sids: list[str]) -> dict[str, dict]:
            with contextlib.suppress(Exception):
                return await self._bounded(self.encoders[encoder].counters.remote(sids), timeout=limit)
            return {}

        sources, encoded = {}, {}
        for part in await asyncio.gather(*(statuses(e, i, sids) for (e, i), sids in by_ingest.items())):
            sources |= part
        for part in await asyncio.gather(*(counters(e, sids) for e, sids in by_encoder.items())):
            encoded |= part
        out = []
        for sid, s in placed.items():
            counted = dict(encoded.get(sid, {}))
            lat = sorted(counted.pop("latencies", []))
            out.append({"id": sid, "spec": s.spec, "encoder": s.encoder, "node": self.encoder_nodes[s.encoder],
                        "source": {"spec": s.spec} | sources.get(sid, {"state": "external"}),
                        "encoder_counters": counted,
                        "latency_p50": lat[len(lat) // 2] if lat else None,
                        "latency_p95": lat[int(len(lat) * 0.95)] if lat else None})
        return out

    async def timeline(self, stream_id: str) -> list[dict]:
        s = self._get(stream_id)
        return await self._bounded(self.encoders[s.encoder].timeline.remote(stream_id))

    async def thumbnail(self, stream_id: str, entry_id: int) -> bytes:
        s = self._get(stream_id)
        jpeg = await self._bounded(self.encoders[s.encoder].thumbnail.remote(stream_id, entry_id))
        if jpeg is None:
            raise RequestError(f"stream {stream_id!r} has no thumbnail for entry {entry_id} "
                               "(no such entry, merged into a newer one, or none taken)", status=404)
        return jpeg

    async def ask(self, stream_id: str, question: str, start: float | None = None, end: float | None = None,
                  options: list | None = None) -> dict:
        s = self._get(stream_id)
        if start is not None and end is not None and start > end:
            raise RequestError(f"the window's start ({start}) is after its end ({end})")
        entries = self.encoders[s.encoder].window.remote(stream_id, start, end)  # goes to the answerer directly
        result = await self._bounded(self._answerer(s.encoder).answer.remote(entries, question, options))
        if "error" in result:
            raise RequestError(result["error"])
        return result

    async def search(self, query: str, stream_ids: list[str] | None, start: float | None, end: float | None,
                     limit: int) -> list[dict]:
        """Memory entries of `stream_ids` (None: all) overlapping [start, end], ranked by relevance to `query`."""
        sids = list(self.streams) if stream_ids is None else list(dict.fromkeys(stream_ids))
        windows = [self.encoders[self._get(sid).encoder].window.remote(sid, start, end) for sid in sids]
        result = await self._bounded(self._answerer().search.remote(sids, query, limit, *windows))
        if "error" in result:
            raise RequestError(result["error"])
        return result["results"]

    async def metrics(self) -> dict:
        per_stream = await self.list_streams()
        return {"streams": per_stream, "encoders": len(self.encoders), "encoders_dead": len(self.dead),
                "stream_moves": self.moves}

    async def encoder_of(self, stream_id: str):
        return self.encoders[self._get(stream_id).encoder]

    async def ingest_of(self, stream_id: str):
        """The IngestWorker running the stream, or None where the caller feeds it (whip://)."""
        s = self._get(stream_id)
        return None if s.ingest is None else self.ingests[s.encoder][s.ingest]

    async def placement(self) -> dict:
        return {"controller_node": ray.get_runtime_context().get_node_id(),
                "encoder_nodes": self.encoder_nodes, "dead": sorted(self.dead),
                "streams": {sid: s.encoder for sid, s in self.streams.items()},
                "ingest": {sid: [s.encoder, s.ingest] for sid, s in self.streams.items() if s.ingest is not None}}

    # -- health -------------------------------------------------------------------------------------

    async def _health_loop(self) -> None:
        while True:
            await asyncio.sleep(self.cfg.runtime.health_interval)
            with contextlib.suppress(Exception):
                await self._check()

    async def _check(self) -> None:
        # An encoder is lost for good only when the node it is pinned to is gone. Its calls failing says
        # nothing: ray.kill or a crash fails the calls in flight (even with ActorDiedError) while Ray
        # restarts it in place, and its streams re-attach on their next frame.
        if self.cfg.runtime.encoder_gpus > 0:
            nodes = await self._bounded(asyncio.to_thread(ray.nodes), timeout=self.cfg.runtime.health_interval * 5)
            alive = {n["NodeID"] for n in nodes if n["Alive"]}
            self.dead.update(i for i, node in enumerate(self.encoder_nodes) if node not in alive)
        for sid, s in list(self.streams.items()):
            if s.encoder in self.dead:  # move it: to the encoder with the fewest streams, and its ingest worker
                try:
                    encoder = self._least_loaded()
                except RequestError:  # none alive: stay, and try again at the next check
                    continue
                external, s.encoder, s.ingest = s.ingest is None, encoder, None
                if not external:
                    s.ingest = self._least_loaded_ingest(encoder)
                self.moves += 1
                with contextlib.suppress(Exception):  # restore it there now, so reads find it at once
                    await self._bounded(self.encoders[s.encoder].attach.remote(sid))
        # every live ingest worker hears its whole set: a restarted one starts them, a moved stream's new one too
        workers = [(e, i) for e in range(len(self.ingests)) if e not in self.dead for i in range(len(self.ingests[e]))]
        await asyncio.gather(*(self._assign(e, i, self.cfg.runtime.health_interval * 5) for e, i in workers),
                             return_exceptions=True)

    async def _assign(self, encoder: int, slot: int, timeout: float | None = None) -> None:
        streams = {sid: (s.spec, self.encoders[encoder]) for sid, s in self.streams.items()
                   if s.encoder == encoder and s.ingest == slot}
        await self._bounded(self.ingests[encoder][slot].assign.remote(streams), timeout)

    def _answerer(self, encoder: int | None = None):
        """The actor to answer the next question: the LLM actors in turn; where runtime.llm_actors is 0, the
        encoder that holds the stream's memory (`encoder`), or the live encoders in turn."""
        if not self.llms and encoder is not None:
            return self.encoders[encoder]
        actors = self.llms or [self.encoders[i] for i in self._live()]
        self.next_llm += 1
        return actors[self.next_llm % len(actors)]

    def _live(self) -> list[int]:
        """The encoders alive (indices into self.encoders); none is a 503."""
        live = [i for i in range(len(self.encoders)) if i not in self.dead]
        if not live:
            raise RequestError("no encoder is alive", status=503)
        return live

    def _least_loaded(self) -> int:
        live = self._live()
        load = {i: 0 for i in live}
        for s in self.streams.values():
            if s.encoder in load:
                load[s.encoder] += 1
        return min(live, key=lambda i: load[i])

    def _least_loaded_ingest(self, encoder: int) -> int:
        load = [0] * len(self.ingests[encoder])
        for s in self.streams.values():
            if s.encoder == encoder and s.ingest is not None:
                load[s.ingest] += 1
        return load.index(min(load))

    def _get(self, stream_id: str) -> _Stream:
        try:
            return self.streams[stream_id]
        except (KeyError, TypeError):
            raise RequestError(f"no stream {stream_id!r}", status=404) from None

    async def _bounded(self, ref, timeout: float | None = None):
        return await asyncio.wait_for(ref, timeout or self.timeout)


def start_controller(cfg: Config, name: str = CONTROLLER):
    """Create the controller (named, detached from nothing: it lives as long as the driver) and wait for it."""
    # On the head node: the controller must not go down with a worker node (the head going down takes the
    # cluster with it). Not "the driver's node": a driver on a host running several raylets (a test's
    # cluster_utils.Cluster) may be attached to any of them.
    controller = Controller.options(name=name, num_cpus=0, max_concurrency=1000, enable_task_events=False,
                                    resources={"node:__internal_head__": 0.001}).remote(cfg)
    ray.get(controller.ready.remote(), timeout=max(120.0, cfg.runtime.request_timeout))
    return controller

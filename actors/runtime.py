"""Ray actors: thin shells over EncoderWorker, Ingest and Answerer, and the controller that places them.

    controller = start_controller(cfg)          # after ray.init(); creates encoders and LLM actors
    await controller.add_stream.remote("cam1", "rtsp://...")

Placement: with `runtime.encoder_gpus > 0`, one encoder actor per GPU of every node that has GPUs, pinned
to its node; else `runtime.encoders` encoder actors spread over the nodes. A stream goes to the encoder
with the fewest streams. Recovery: every actor restarts (max_restarts=-1). A restarted encoder comes back
empty; the stream's ingest hears "unknown stream" on its next frame and re-attaches, which restores the
stream's memory and encoder state from its store (see actors/worker.py). An encoder whose node is gone
cannot restart (it is pinned there): the controller sees it dead and moves its streams to the others,
which restore them from their stores. A restarted ingest actor is started again by the controller's next
health check and reconnects. A whip:// stream's ingest runs in the gateway, where its publisher connects
(`add_stream(..., ingest=False)`); it finds its encoder through the controller at every attach.
Every call across actors has a timeout (`runtime.request_timeout`), so no request waits forever.
"""
from __future__ import annotations

import asyncio
import contextlib
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from actors.ingest import Ingest
from configs import Config
from stream.ids import check_stream_id
from stream.sources import open_source

CONTROLLER = "cubestream-controller"


@ray.remote
class EncoderActor:
    """An EncoderWorker; frames from all its streams' ingest actors are batched together (one per stream)."""

    def __init__(self, cfg: Config):
        import torch

        from actors.worker import EncoderWorker, load_models

        ids = ray.get_runtime_context().get_accelerator_ids().get("GPU", [])
        device = "cuda" if ids and torch.cuda.is_available() else "cpu"
        torch.set_num_threads(max(1, int(cfg.runtime.encoder_cpus)))
        model, _ = load_models(cfg)
        self.worker = EncoderWorker(model, cfg, device)
        self.max_batch = cfg.runtime.max_batch
        self.pool = ThreadPoolExecutor(1)  # the worker is used from one thread only, off the event loop
        self.pending: dict[str, list[tuple[tuple, asyncio.Future]]] = {}
        self.batches = 0
        self._wake: asyncio.Event | None = None

    async def push(self, stream_id: str, image: np.ndarray, pts: float, arrival: float) -> str | None:
        if self._wake is None:
            self._wake = asyncio.Event()
            asyncio.create_task(self._batch_loop())
        fut = asyncio.get_running_loop().create_future()
        self.pending.setdefault(stream_id, []).append(((stream_id, image, pts, arrival), fut))
        self._wake.set()
        return await fut

    async def _batch_loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self.pending:
                # the oldest frame of each stream; a stream's later frames wait for the next batch
                taken = []
                for sid in list(self.pending)[:self.max_batch]:
                    taken.append(self.pending[sid].pop(0))
                    if not self.pending[sid]:
                        del self.pending[sid]
                try:
                    result = await self._call(self.worker.push, [item for item, _ in taken])
                    self.batches += 1
                except Exception as e:  # a bug, not a client's doing: fail these frames, keep serving
                    for _, fut in taken:
                        fut.set_exception(e)
                    continue
                for (item, fut) in taken:
                    fut.set_result(result[item[0]])

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

    async def counters(self) -> dict:
        return await self._call(self.worker.stats)

    def ping(self) -> str:
        return ray.get_runtime_context().get_node_id()

    async def _call(self, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(self.pool, fn, *args)


@ray.remote
class IngestActor:
    """One stream's Ingest, pushing to whichever encoder the controller names."""

    def __init__(self, stream_id: str, spec: str, cfg: Config):
        self.stream_id, self.spec, self.cfg = stream_id, spec, cfg
        self.ingest: Ingest | None = None

    async def run(self, encoder) -> None:
        """Start (idempotent) and send to `encoder`; the controller calls this on every health check."""
        if self.ingest is None:
            self.ingest = Ingest(self.stream_id, self.spec, self.cfg)
        if getattr(self.ingest.target, "handle", None) != encoder:
            self.ingest.retarget(RemoteEncoder(encoder, self.cfg.runtime.request_timeout))
        self.ingest.start()

    def status(self) -> dict:
        return self.ingest.status() if self.ingest else {"spec": self.spec, "state": "connecting"}

    async def close(self) -> None:
        if self.ingest is not None:
            await self.ingest.close()


@dataclass
class RemoteEncoder:
    """An encoder actor as an Ingest target, every call bounded by the request timeout. With `controller`,
    the stream's encoder is looked up at every attach, so a restarted or moved one is followed; without,
    it is `handle`, which the controller's health check retargets."""
    handle: object
    timeout: float
    controller: object = None

    async def attach(self, stream_id):
        if self.controller is not None:
            self.handle = await asyncio.wait_for(self.controller.encoder_of.remote(stream_id), self.timeout)
        return await asyncio.wait_for(self.handle.attach.remote(stream_id), self.timeout)

    async def push(self, stream_id, image, pts, arrival):
        return await asyncio.wait_for(self.handle.push.remote(stream_id, image, pts, arrival), self.timeout)


@ray.remote
class LLMActor:
    """An Answerer. Calls run one at a time (a synchronous actor): the model is the bottleneck anyway."""

    def __init__(self, cfg: Config):
        import torch

        from actors.worker import load_models
        from models.answerer import Answerer

        torch.set_num_threads(1)
        _, llm = load_models(cfg)
        if cfg.runtime.llm_gpus and torch.cuda.is_available():
            llm = llm.cuda()
        self.answerer = Answerer(llm, cfg.answer)

    def answer(self, entries: list, question: str, options: list | None = None) -> dict:
        """entries: the stream's memory entries to consider (stream.memory.MemoryEntry), in time order."""
        from models.answerer import QuestionError

        try:
            a = self.answerer.answer(entries, question, options)
        except QuestionError as e:
            return {"error": str(e)}
        return {"text": a.text, "citations": [{"start": c.start, "end": c.end, "score": c.score} for c in a.citations],
                "tokens_used": a.tokens_used, "latency_s": a.latency_s,
                "cubes_considered": a.cubes_considered, "cubes_used": a.cubes_used} | \
            ({"option_logprobs": a.option_logprobs} if a.option_logprobs is not None else {})


class RequestError(ValueError):
    """A request the runtime refuses (the gateway answers 400); `status` 404 for an unknown stream."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


@dataclass
class _Stream:
    spec: str
    encoder: int  # index into Controller.encoders
    ingest: object  # IngestActor handle; None where the caller runs the ingest (the gateway, for whip://)
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
        restart = dict(max_restarts=-1, max_task_retries=0)
        if rt.encoder_gpus > 0:
            gpu_nodes = [n for n in ray.nodes() if n["Alive"] and n["Resources"].get("GPU", 0) > 0]
            if not gpu_nodes:
                raise RuntimeError("runtime.encoder_gpus > 0 but the cluster has no GPU node")
            for n in gpu_nodes:
                for _ in range(int(n["Resources"]["GPU"] // rt.encoder_gpus)):
                    self.encoders.append(EncoderActor.options(
                        num_cpus=rt.encoder_cpus, num_gpus=rt.encoder_gpus, **restart,
                        scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)).remote(cfg))
                    self.encoder_nodes.append(n["NodeID"])
        else:
            for _ in range(rt.encoders):
                self.encoders.append(EncoderActor.options(num_cpus=rt.encoder_cpus, scheduling_strategy="SPREAD",
                                                          **restart).remote(cfg))
                self.encoder_nodes.append(None)
        self.llms = [LLMActor.options(num_cpus=0, num_gpus=rt.llm_gpus, max_restarts=-1, max_task_retries=2).remote(cfg)
                     for _ in range(rt.llm_actors)]
        self.next_llm = 0
        self.streams: dict[str, _Stream] = {}
        self.moves = 0
        self._monitor: asyncio.Task | None = None

    async def ready(self) -> list[str]:
        """Wait until every encoder and LLM actor is up; returns the encoders' node ids."""
        nodes = await asyncio.gather(*(e.ping.remote() for e in self.encoders))
        await asyncio.gather(*(llm.__ray_ready__.remote() for llm in self.llms))
        self.encoder_nodes = list(nodes)
        if self._monitor is None:
            self._monitor = asyncio.create_task(self._health_loop())
        return list(nodes)

    # -- streams ------------------------------------------------------------------------------------

    async def add_stream(self, stream_id: str, spec: str, ingest: bool = True) -> dict:
        """Place a stream; with `ingest`, also start an ingest actor for `spec`, else the caller feeds it."""
        try:
            check_stream_id(stream_id)
            if ingest:  # a malformed spec is refused here, before any actor exists
                open_source(spec, self.cfg.source).close()
        except ValueError as e:
            raise RequestError(str(e)) from None
        if stream_id in self.streams:
            raise RequestError(f"stream {stream_id!r} exists", status=409)
        encoder = self._least_loaded()
        actor = IngestActor.options(num_cpus=0, max_restarts=-1, max_task_retries=0).remote(stream_id, spec, self.cfg) \
            if ingest else None
        self.streams[stream_id] = _Stream(spec, encoder, actor, time.time())
        await self._bounded(self.encoders[encoder].attach.remote(stream_id))
        if actor is not None:
            await self._bounded(actor.run.remote(self.encoders[encoder]))
        return await self.stream(stream_id)

    async def remove_stream(self, stream_id: str) -> None:
        s = self._get(stream_id)
        del self.streams[stream_id]
        if s.ingest is not None:
            with contextlib.suppress(Exception):
                await self._bounded(s.ingest.close.remote())
            ray.kill(s.ingest, no_restart=True)
        await self._bounded(self.encoders[s.encoder].remove_stream.remote(stream_id, True))

    async def save_all(self) -> None:
        """Before the service stops: stop every stream's ingest, then have its encoder save the stream's
        state and close its store (its files stay), so that a restart resumes each stream where it stopped."""
        async def save(sid: str, s: _Stream) -> None:
            if s.ingest is not None:
                with contextlib.suppress(Exception):
                    await self._bounded(s.ingest.close.remote())
            await self._bounded(self.encoders[s.encoder].remove_stream.remote(sid, False))

        await asyncio.gather(*(save(sid, s) for sid, s in self.streams.items()), return_exceptions=True)

    async def list_streams(self) -> list[dict]:
        return await asyncio.gather(*(self.stream(sid) for sid in list(self.streams)))

    async def stream(self, stream_id: str) -> dict:
        s = self._get(stream_id)
        try:
            source = {"spec": s.spec, "state": "external"} if s.ingest is None else \
                await self._bounded(s.ingest.status.remote(), timeout=min(5.0, self.timeout))
        except Exception as e:
            source = {"spec": s.spec, "state": "unavailable", "last_error": repr(e)}
        try:
            counters = (await self._bounded(self.encoders[s.encoder].counters.remote(), timeout=min(5.0, self.timeout))).get(stream_id, {})
        except Exception:
            counters = {}
        lat = sorted(counters.pop("latencies", []))
        return {"id": stream_id, "spec": s.spec, "encoder": s.encoder, "node": self.encoder_nodes[s.encoder],
                "source": source, "encoder_counters": counters,
                "latency_p50": lat[len(lat) // 2] if lat else None,
                "latency_p95": lat[int(len(lat) * 0.95)] if lat else None}

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
        entries = self.encoders[s.encoder].window.remote(stream_id, start, end)  # goes to the LLM actor directly
        llm = self.llms[self.next_llm % len(self.llms)]
        self.next_llm += 1
        result = await self._bounded(llm.answer.remote(entries, question, options))
        if "error" in result:
            raise RequestError(result["error"])
        return result

    async def metrics(self) -> dict:
        per_stream = await self.list_streams()
        return {"streams": per_stream, "encoders": len(self.encoders), "encoders_dead": len(self.dead),
                "stream_moves": self.moves}

    async def encoder_of(self, stream_id: str):
        return self.encoders[self._get(stream_id).encoder]

    async def ingest_of(self, stream_id: str):
        """The stream's IngestActor, or None where the caller feeds it (whip://)."""
        return self._get(stream_id).ingest

    async def placement(self) -> dict:
        return {"controller_node": ray.get_runtime_context().get_node_id(),
                "encoder_nodes": self.encoder_nodes, "dead": sorted(self.dead),
                "streams": {sid: s.encoder for sid, s in self.streams.items()}}

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
            try:
                await self._tend(sid, s)
            except Exception:  # one stream's trouble (no encoder left, a slow actor) must not stall the others
                continue

    async def _tend(self, sid: str, s: _Stream) -> None:
        if s.encoder in self.dead:
            s.encoder = self._least_loaded()
            self.moves += 1
            with contextlib.suppress(Exception):  # restore it there now, so reads find it at once
                await self._bounded(self.encoders[s.encoder].attach.remote(sid))
        if s.ingest is not None:  # a restarted ingest starts here, a moved one retargets (whip's finds it itself)
            await self._bounded(s.ingest.run.remote(self.encoders[s.encoder]), timeout=self.cfg.runtime.health_interval * 5)

    def _least_loaded(self) -> int:
        live = [i for i in range(len(self.encoders)) if i not in self.dead]
        if not live:
            raise RequestError("no encoder is alive", status=503)
        load = {i: 0 for i in live}
        for s in self.streams.values():
            if s.encoder in load:
                load[s.encoder] += 1
        return min(live, key=lambda i: load[i])

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
    controller = Controller.options(name=name, num_cpus=0, max_concurrency=1000,
                                    resources={"node:__internal_head__": 0.001}).remote(cfg)
    ray.get(controller.ready.remote(), timeout=max(120.0, cfg.runtime.request_timeout))
    return controller

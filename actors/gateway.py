"""The HTTP API: an aiohttp app in front of the controller actor.

    GET    /                               no auth: the monitoring page (actors/page.py, actors/web/)
    GET    /health                         no auth: 200 while the gateway runs
    GET    /metrics                        Prometheus text format
    GET    /streams                        every stream with its status and counters
    POST   /streams                        {"id": "cam1", "source": "rtsp://..."} -> 201
    GET    /streams/{id}                   one stream
    DELETE /streams/{id}
    GET    /streams/{id}/timeline          its memory: entries (id, level, start, end, num_frames, cubes, thumbnail)
    GET    /streams/{id}/thumbnails/{n}    entry n's JPEG
    POST   /streams/{id}/ask               {"question": "...", "start": s, "end": s, "options": ["...", ...]}
                                           (window and options optional; with options the answer is one of them)
    POST   /whip/{name}                    WHIP (RFC 9725): a publisher's SDP offer, for a stream added as whip://name
    DELETE /whip/{name}/{session}          WHIP: the publisher leaves

Every route but /health wants `Authorization: Bearer <token>`; WHIP publishers present `whip.token` if the
profile sets one, else this token. A whip:// stream's publisher reaches this process, so its ingest (the
same Ingest an ingest actor runs) runs here and pushes to the stream's encoder actor. Bodies are JSON, or msgpack with
Content-Type: application/msgpack; answers are JSON, or msgpack with Accept: application/msgpack.
A bad request is a 4xx that says what is wrong; an actor that does not answer in time is a 504.
"""
from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections import Counter
from urllib.parse import urlsplit

from aiohttp import web
from ray.exceptions import RayActorError

from actors import page
from actors.ingest import Ingest
from actors.runtime import RemoteEncoder, RequestError
from actors.validation import MSGPACK, BadRequest, Guard, bearer_matches, read_object, url_scheme
from configs import Config
from stream.codec import packb
from stream.sources import WhipServer, open_source

log = logging.getLogger(__name__)
LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class Gateway:
    def __init__(self, controller, cfg: Config, token: str):
        self.controller, self.cfg, self.token = controller, cfg, token
        self.timeout = cfg.runtime.request_timeout
        self.whip = WhipServer(dataclasses.replace(cfg.whip, token=cfg.whip.token or token), cfg.source)
        self.whip_streams: dict[str, tuple[str, Ingest]] = {}  # stream id -> (WHIP name, its ingest here)
        self.requests: Counter[tuple[str, int]] = Counter()
        self.ask_latency = [0] * (len(LATENCY_BUCKETS) + 1)  # cumulative at exposition
        self.ask_sum = 0.0
        # POST and DELETE of one stream id run one at a time, so neither sees the other's half-made stream
        self._id_locks: dict[str, tuple[asyncio.Lock, int]] = {}  # id -> (its lock, holders and waiters)

    def app(self) -> web.Application:
        app = web.Application(client_max_size=self.cfg.server.max_body_bytes,
                              middlewares=[self._errors, Guard(self.cfg.server).middleware, self._auth])
        app.add_subapp("/whip", self.whip.app())
        app.on_cleanup.append(lambda _: self.close())
        page.add_routes(app)
        app.router.add_get("/health", self.health)
        app.router.add_get("/metrics", self.metrics)
        app.router.add_get("/streams", self.list_streams)
        app.router.add_post("/streams", self.add_stream)
        app.router.add_get("/streams/{id}", self.get_stream)
        app.router.add_delete("/streams/{id}", self.remove_stream)
        app.router.add_get("/streams/{id}/timeline", self.timeline)
        app.router.add_get(r"/streams/{id}/thumbnails/{entry:\d{1,18}}", self.thumbnail)
        app.router.add_post("/streams/{id}/ask", self.ask)
        return app

    # -- routes -------------------------------------------------------------------------------------

    async def health(self, request):
        return web.json_response({"ok": True})

    async def list_streams(self, request):
        return _reply(request, [self._local(s) for s in await self._call(self.controller.list_streams.remote())])

    async def add_stream(self, request):
        body = await read_object(request, {"id": str, "source": str})
        async with self._id_lock(body["id"]):
            if url_scheme(body["source"]) == "whip":
                result = await self._add_whip(body["id"], body["source"])
            else:
                result = await self._call(self.controller.add_stream.remote(body["id"], body["source"]))
        return _reply(request, self._local(result), status=201)

    @contextlib.asynccontextmanager
    async def _id_lock(self, stream_id: str):
        """Hold the stream id's lock; a lock lives while someone holds or awaits it."""
        lock, users = self._id_locks.get(stream_id, (asyncio.Lock(), 0))
        self._id_locks[stream_id] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            users = self._id_locks[stream_id][1] - 1
            if users:
                self._id_locks[stream_id] = (lock, users)
            else:
                del self._id_locks[stream_id]

    async def _add_whip(self, stream_id: str, spec: str) -> dict:
        name = urlsplit(spec).netloc
        if name in self.whip.sources:  # one publisher feeds one stream
            raise RequestError(f"{spec} is the source of another stream", status=409)
        try:
            source = open_source(spec, self.cfg.source, whip=self.whip)  # registers the name
        except ValueError as e:
            raise RequestError(str(e)) from None
        try:
            result = await self._call(self.controller.add_stream.remote(stream_id, spec, False))
        except BaseException:
            self.whip.remove(name)
            raise
        ingest = Ingest(stream_id, spec, self.cfg, source=source)
        ingest.retarget(RemoteEncoder(None, self.timeout, self.controller))
        ingest.start()
        self.whip_streams[stream_id] = (name, ingest)
        return result

    async def get_stream(self, request):
        return _reply(request, self._local(await self._call(self.controller.stream.remote(request.match_info["id"]))))

    async def remove_stream(self, request):
        stream_id = request.match_info["id"]
        async with self._id_lock(stream_id):
            await self._call(self.controller.remove_stream.remote(stream_id))
            await self._close_whip(stream_id)
        return _reply(request, {"removed": stream_id})

    async def _close_whip(self, stream_id: str) -> None:
        if (whip := self.whip_streams.pop(stream_id, None)) is not None:
            await whip[1].close()
            self.whip.remove(whip[0])

    async def close(self) -> None:
        """Stop the ingests that run here (the runtime keeps the streams' memories)."""
        for stream_id in list(self.whip_streams):
            await self._close_whip(stream_id)

    def _local(self, stream: dict) -> dict:
        """A stream's status, with its source's as seen here if its ingest runs here."""
        whip = self.whip_streams.get(stream["id"])
        return stream if whip is None else stream | {"source": whip[1].status()}

    async def timeline(self, request):
        return _reply(request, await self._call(self.controller.timeline.remote(request.match_info["id"])))

    async def thumbnail(self, request):
        jpeg = await self._call(self.controller.thumbnail.remote(request.match_info["id"], int(request.match_info["entry"])))
        return web.Response(body=jpeg, content_type="image/jpeg")

    async def ask(self, request):
        body = await read_object(request, {"question": str}, {"start": float, "end": float, "options": list})
        if len(body["question"]) > self.cfg.server.max_question_chars:
            raise BadRequest(f"the question is longer than {self.cfg.server.max_question_chars} characters")
        started = time.perf_counter()
        result = await self._call(self.controller.ask.remote(request.match_info["id"], body["question"],
                                                              body.get("start"), body.get("end"), body.get("options")))
        self._observe(time.perf_counter() - started)
        return _reply(request, result)

    async def metrics(self, request):
        m = await self._call(self.controller.metrics.remote())
        m["streams"] = [self._local(s) for s in m["streams"]]
        lines = []

        def metric(name, kind, help_, samples):
            lines.extend([f"# HELP cubestream_{name} {help_}", f"# TYPE cubestream_{name} {kind}"])
            lines.extend(f"cubestream_{name}{labels} {value}" for labels, value in samples)

        metric("http_requests_total", "counter", "HTTP requests by route and status",
               [(f'{{route="{r}",status="{s}"}}', n) for (r, s), n in sorted(self.requests.items())])
        cum, buckets = 0, []
        for le, n in zip((*LATENCY_BUCKETS, "+Inf"), self.ask_latency):
            cum += n
            buckets.append((f'_bucket{{le="{le}"}}', cum))
        lines.extend(["# HELP cubestream_ask_seconds question latency at the gateway", "# TYPE cubestream_ask_seconds histogram"])
        lines.extend(f"cubestream_ask_seconds{labels} {v}" for labels, v in buckets)
        lines.extend([f"cubestream_ask_seconds_sum {self.ask_sum}", f"cubestream_ask_seconds_count {cum}"])
        metric("streams", "gauge", "streams served", [("", len(m["streams"]))])
        metric("encoders", "gauge", "encoder actors placed", [("", m["encoders"])])
        metric("encoders_dead", "gauge", "encoder actors lost with their node", [("", m["encoders_dead"])])
        metric("stream_moves_total", "counter", "streams moved to another encoder", [("", m["stream_moves"])])
        per_stream = {
            "frames_decoded_total": ("counter", "frames the source decoded", lambda s: s["source"].get("frames_decoded")),
            "frames_sampled_total": ("counter", "frames the sampler let through", lambda s: s["source"].get("frames_sampled")),
            "frames_dropped_total": ("counter", "sampled frames dropped for a slow consumer", lambda s: s["source"].get("frames_dropped")),
            "reconnects_total": ("counter", "source reconnects", lambda s: s["source"].get("reconnects")),
            "frames_encoded_total": ("counter", "frames in the stream's memory", lambda s: s["encoder_counters"].get("frames")),
            "cubes_total": ("counter", "closed cubes", lambda s: s["encoder_counters"].get("cubes")),
            "memory_tokens": ("gauge", "tokens held in the stream's rolling memory", lambda s: s["encoder_counters"].get("memory_tokens")),
            "memory_entries": ("gauge", "entries in the stream's rolling memory", lambda s: s["encoder_counters"].get("entries")),
            "frame_latency_p50_seconds": ("gauge", "frame arrival to memory, median", lambda s: s["latency_p50"]),
            "frame_latency_p95_seconds": ("gauge", "frame arrival to memory, 95th percentile", lambda s: s["latency_p95"]),
        }
        for name, (kind, help_, get) in per_stream.items():
            metric(name, kind, help_, [(f'{{stream="{s["id"]}"}}', get(s)) for s in m["streams"] if get(s) is not None])
        return web.Response(text="\n".join(lines) + "\n", content_type="text/plain", charset="utf-8",
                            headers={"X-Prometheus-Format": "0.0.4"})

    # -- plumbing -----------------------------------------------------------------------------------

    @web.middleware
    async def _auth(self, request, handler):
        if request.path != "/health" and request.path not in page.PUBLIC_PATHS \
                and not request.path.startswith("/whip/"):  # WhipServer checks its publishers
            if not bearer_matches(request, self.token):
                raise web.HTTPUnauthorized(text="bearer token required\n", headers={"WWW-Authenticate": "Bearer"})
        return await handler(request)

    @web.middleware
    async def _errors(self, request, handler):
        route = request.match_info.route.resource.canonical if request.match_info.route.resource else "unmatched"
        try:
            response = await handler(request)
        except web.HTTPException as e:
            self.requests[(route, e.status)] += 1
            raise
        except Exception as e:
            status, message = _error(e)
            self.requests[(route, status)] += 1
            if status == 500:  # a bug of ours, not the client's doing: worth its traceback
                log.exception("%s %s", request.method, route)
            return _reply(request, {"error": message}, status=status)
        self.requests[(route, response.status)] += 1
        return response

    async def _call(self, ref):
        return await asyncio.wait_for(ref, self.timeout)

    def _observe(self, seconds: float) -> None:
        self.ask_sum += seconds
        i = next((i for i, le in enumerate(LATENCY_BUCKETS) if seconds <= le), len(LATENCY_BUCKETS))
        self.ask_latency[i] += 1


def _error(e: Exception) -> tuple[int, str]:
    cause = getattr(e, "cause", None) or e  # Ray wraps an actor's exception; its cause is the original
    if isinstance(cause, RequestError):
        return cause.status, str(cause.args[0])
    if isinstance(e, (asyncio.TimeoutError, TimeoutError)):
        return 504, "the runtime did not answer in time"
    if isinstance(e, RayActorError):
        return 503, "an actor is unavailable; retry"
    return 500, f"internal error: {type(cause).__name__}"


def _reply(request: web.Request, data, status: int = 200) -> web.Response:
    if MSGPACK in request.headers.get("Accept", ""):
        return web.Response(body=packb(data), status=status, content_type=MSGPACK)
    return web.json_response(data, status=status)

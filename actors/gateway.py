"""The HTTP API: an aiohttp app in front of the controller actor.

    GET    /health                         no auth: 200 while the gateway runs
    GET    /metrics                        Prometheus text format
    GET    /streams                        every stream with its status and counters
    POST   /streams                        {"id": "cam1", "source": "rtsp://..."} -> 201
    GET    /streams/{id}                   one stream
    DELETE /streams/{id}
    GET    /streams/{id}/timeline          its closed cubes (index, start, end, num_frames, score)
    POST   /streams/{id}/ask               {"question": "...", "start": s, "end": s} (the window is optional)

Every route but /health wants `Authorization: Bearer <token>`. Bodies are JSON, or msgpack with
Content-Type: application/msgpack; answers are JSON, or msgpack with Accept: application/msgpack.
A bad request is a 4xx that says what is wrong; an actor that does not answer in time is a 504.
"""
from __future__ import annotations

import asyncio
import hmac
import json
import time
from collections import Counter

from aiohttp import web
from ray.exceptions import RayActorError

from actors.runtime import RequestError
from configs import ServerConfig
from stream.codec import CodecError, packb, unpackb

MSGPACK = "application/msgpack"
LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class Gateway:
    def __init__(self, controller, cfg: ServerConfig, token: str, timeout: float):
        self.controller, self.cfg, self.token, self.timeout = controller, cfg, token, timeout
        self.requests: Counter[tuple[str, int]] = Counter()
        self.ask_latency = [0] * (len(LATENCY_BUCKETS) + 1)  # cumulative at exposition
        self.ask_sum = 0.0

    def app(self) -> web.Application:
        app = web.Application(client_max_size=self.cfg.max_body_bytes, middlewares=[self._errors, self._auth])
        app.router.add_get("/health", self.health)
        app.router.add_get("/metrics", self.metrics)
        app.router.add_get("/streams", self.list_streams)
        app.router.add_post("/streams", self.add_stream)
        app.router.add_get("/streams/{id}", self.get_stream)
        app.router.add_delete("/streams/{id}", self.remove_stream)
        app.router.add_get("/streams/{id}/timeline", self.timeline)
        app.router.add_post("/streams/{id}/ask", self.ask)
        return app

    # -- routes -------------------------------------------------------------------------------------

    async def health(self, request):
        return web.json_response({"ok": True})

    async def list_streams(self, request):
        return _reply(request, await self._call(self.controller.list_streams.remote()))

    async def add_stream(self, request):
        body = await _body(request, {"id": str, "source": str})
        result = await self._call(self.controller.add_stream.remote(body["id"], body["source"]))
        return _reply(request, result, status=201)

    async def get_stream(self, request):
        return _reply(request, await self._call(self.controller.stream.remote(request.match_info["id"])))

    async def remove_stream(self, request):
        await self._call(self.controller.remove_stream.remote(request.match_info["id"]))
        return _reply(request, {"removed": request.match_info["id"]})

    async def timeline(self, request):
        return _reply(request, await self._call(self.controller.timeline.remote(request.match_info["id"])))

    async def ask(self, request):
        body = await _body(request, {"question": str}, {"start": (int, float), "end": (int, float)})
        if len(body["question"]) > self.cfg.max_question_chars:
            raise web.HTTPBadRequest(text=f"the question is longer than {self.cfg.max_question_chars} characters\n")
        started = time.perf_counter()
        result = await self._call(self.controller.ask.remote(request.match_info["id"], body["question"],
                                                              body.get("start"), body.get("end")))
        self._observe(time.perf_counter() - started)
        return _reply(request, result)

    async def metrics(self, request):
        m = await self._call(self.controller.metrics.remote())
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
        if request.path != "/health":
            given = request.headers.get("Authorization", "")
            if not hmac.compare_digest(given.encode(), f"Bearer {self.token}".encode()):
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


async def _body(request: web.Request, required: dict, optional: dict | None = None) -> dict:
    """The request's JSON or msgpack object, with the required keys and every key of the expected type."""
    raw = await request.read()  # over client_max_size: aiohttp answers 413
    try:
        body = unpackb(raw, max_bytes=len(raw) + 1) if request.content_type == MSGPACK else json.loads(raw)
    except (CodecError, ValueError):
        raise web.HTTPBadRequest(text=f"the body is not valid {'msgpack' if request.content_type == MSGPACK else 'JSON'}\n") from None
    if not isinstance(body, dict):
        raise web.HTTPBadRequest(text="the body must be an object\n")
    types = {**required, **(optional or {})}
    for key, value in body.items():
        if key not in types:
            raise web.HTTPBadRequest(text=f"unknown field {key!r}; expected {', '.join(types)}\n")
        if value is not None and (isinstance(value, bool) or not isinstance(value, types[key])):
            raise web.HTTPBadRequest(text=f"field {key!r} has the wrong type\n")
    missing = [k for k in required if body.get(k) is None]
    if missing:
        raise web.HTTPBadRequest(text=f"missing field(s): {', '.join(missing)}\n")
    return body


def _reply(request: web.Request, data, status: int = 200) -> web.Response:
    if MSGPACK in request.headers.get("Accept", ""):
        return web.Response(body=packb(data), status=status, content_type=MSGPACK)
    return web.json_response(data, status=status)

"""The HTTP API: an aiohttp app in front of the controller actor.

    GET    /                               no auth: the monitoring page (actors/page.py, actors/web/)
    GET    /health                         no auth: 200 while the gateway runs
    GET    /whoami                         {"role": "admin" | "viewer"}: the caller's token's role
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
    GET    /streams/{id}/watches           the stream's watches (standing queries); GET /watches: every stream's
    POST   /streams/{id}/watches           {"question": "...", "answer": "..." | [...], ...} -> 201 (actors/watches.py)
    GET    /streams/{id}/watches/{watch}   one watch, with its state
    DELETE /streams/{id}/watches/{watch}
    GET    /events                         alerts: ?since=<unix s>&after=<id>&stream=&watch=&limit=; with
                                           Accept: text/event-stream, Server-Sent Events resumable by Last-Event-ID
    GET    /search?q=...                   memory entries ranked by relevance (&streams=a,b&start=&end=&limit=)
    POST   /v1/chat/completions            OpenAI-compatible chat; model "cubestream/<id>" (actors/openai_api.py)
    GET    /v1/models                      the streams as models

Roles: `server.token` and `api.admin_tokens` are admin tokens, `api.viewer_tokens` viewer tokens. A viewer
may read, ask, search, chat and follow events; adding or removing streams and watches needs an admin (403).
Streams and watches are kept in the registry (actors/registry.py) and come back when the service restarts.

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
import hmac
import logging
from pathlib import Path
from urllib.parse import quote, urlsplit

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST
from ray.exceptions import RayActorError

from actors import openai_api, page
from actors.events import EventLog, Webhooks, sse
from actors.ingest import Ingest
from actors.metrics import Metrics
from actors.registry import Registry
from actors.runtime import RemoteEncoder, RequestError
from actors.search import SearchError, SearchQuery
from actors.validation import MSGPACK, ROLE, BadRequest, BodyError, Guard, authorization, decode, read_object, url_scheme
from actors.watches import Firing, Watch, Watcher, WatchError
from configs import Config
from stream.codec import packb
from stream.sources import WhipServer, open_source

log = logging.getLogger(__name__)

VIEWER_POSTS = ("/ask", "/v1/chat/completions")  # the POSTs a viewer may make (path endings)


def state_dir(cfg: Config) -> Path:
    """Where the registry and the event log live."""
    return Path(cfg.api.state_dir or Path(cfg.runtime.snapshot_dir) / "_state").expanduser()


class Gateway:
    def __init__(self, controller, cfg: Config, token: str):
        self.controller, self.cfg, self.token = controller, cfg, token
        self.timeout = cfg.runtime.request_timeout
        self.whip = WhipServer(dataclasses.replace(cfg.whip, token=cfg.whip.token or token), cfg.source)
        self.whip_streams: dict[str, tuple[str, Ingest]] = {}  # stream id -> (WHIP name, its ingest here)
        self.admin_tokens = [token, *cfg.api.admin_tokens]
        self.viewer_tokens = list(cfg.api.viewer_tokens)
        self.metrics_ = Metrics()
        state = state_dir(cfg)
        self.registry = Registry(state / "registry.json")
        self.events = EventLog(state / "events.jsonl", cfg.api.events_kept)
        a = cfg.api
        self.webhooks = Webhooks(a.webhooks, a.webhook_timeout, a.webhook_retries, a.webhook_backoff, a.webhook_backoff_max,
                                 a.webhook_queue, on_result=lambda url, outcome: self.metrics_.webhooks.labels(url, outcome).inc())
        self.watcher = Watcher(self.registry.watches, self._timeline, self._watch_ask, self._publish,
                               on_change=self.registry.save, poll=a.watch_poll)
        # POST and DELETE of one stream id run one at a time, so neither sees the other's half-made stream
        self._id_locks: dict[str, tuple[asyncio.Lock, int]] = {}  # id -> (its lock, holders and waiters)

    def app(self) -> web.Application:
        app = web.Application(client_max_size=self.cfg.server.max_body_bytes,
                              middlewares=[self._errors, Guard(self.cfg.server).middleware, self._auth])
        app.add_subapp("/whip", self.whip.app())
        app.on_startup.append(lambda _: self.start())
        app.on_shutdown.append(self._end_event_streams)  # before the server waits for open connections to end
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
        app.router.add_get("/watches", self.list_watches)
        app.router.add_get("/streams/{id}/watches", self.list_watches)
        app.router.add_post("/streams/{id}/watches", self.add_watch)
        app.router.add_get("/streams/{id}/watches/{watch}", self.get_watch)
        app.router.add_delete("/streams/{id}/watches/{watch}", self.remove_watch)
        app.router.add_get("/events", self.list_events)
        app.router.add_get("/search", self.search)
        app.router.add_post("/v1/chat/completions", self.chat)
        app.router.add_get("/v1/models", self.models)
        return app

    async def start(self) -> None:
        """Bring back the registry's streams (their memories restore from their stores), then run the watches."""
        for stream_id, s in list(self.registry.streams.items()):
            try:
                await self._add(stream_id, s["source"])
            except Exception as e:  # kept in the registry: a later restart may find the source again
                log.error("restoring stream %s (%s): %s", stream_id, s["source"], _error(e)[1])
        self.webhooks.start()
        self.watcher.start()

    # -- routes -------------------------------------------------------------------------------------

    async def health(self, request):
        return web.json_response({"ok": True})

    async def list_streams(self, request):
        return _reply(request, [self._local(s) for s in await self._call(self.controller.list_streams.remote())])

    async def add_stream(self, request):
        body = await read_object(request, {"id": str, "source": str})
        async with self._id_lock(body["id"]):
            result = await self._add(body["id"], body["source"])
            self.registry.add_stream(body["id"], body["source"])
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

    async def _add(self, stream_id: str, spec: str) -> dict:
        if url_scheme(spec) == "whip":
            return await self._add_whip(stream_id, spec)
        return await self._call(self.controller.add_stream.remote(stream_id, spec))

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
            self.registry.remove_stream(stream_id)
        return _reply(request, {"removed": stream_id})

    async def _close_whip(self, stream_id: str) -> None:
        if (whip := self.whip_streams.pop(stream_id, None)) is not None:
            await whip[1].close()
            self.whip.remove(whip[0])

    async def close(self) -> None:
        """Stop the watches, webhooks and the ingests that run here (the runtime keeps the streams' memories)."""
        await self.watcher.close()
        self.registry.save()  # the watches' states as they are now
        await self.webhooks.close()
        for stream_id in list(self.whip_streams):
            await self._close_whip(stream_id)

    async def _end_event_streams(self, app) -> None:
        self.events.close()

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
        with self.metrics_.ask_seconds.time():
            result = await self._call(self.controller.ask.remote(request.match_info["id"], body["question"],
                                                                  body.get("start"), body.get("end"), body.get("options")))
        return _reply(request, result)

    # -- watches and events -------------------------------------------------------------------------

    async def list_watches(self, request):
        stream_id = request.match_info.get("id")
        if stream_id is not None:
            await self._call(self.controller.stream.remote(stream_id))  # 404 for an unknown stream
        return _reply(request, [w.as_dict() for w in self.registry.watches.values()
                                if stream_id is None or w.stream == stream_id])

    async def add_watch(self, request):
        stream_id = request.match_info["id"]
        body = await read_object(request, {"question": str}, {k: object for k in Watch.FIELDS if k != "question"})
        watch = Watch.from_request(stream_id, body, self.cfg.server.max_question_chars)
        await self._call(self.controller.stream.remote(stream_id))  # 404 for an unknown stream
        if watch.id in self.registry.watches:
            raise WatchError(f"watch {watch.id!r} exists", status=409)
        if len(self.registry.stream_watches(stream_id)) >= self.cfg.api.max_watches:
            raise WatchError(f"stream {stream_id!r} has {self.cfg.api.max_watches} watches, the most allowed", status=409)
        await self._call(self.controller.ask.remote(stream_id, watch.question, None, None, watch.options))  # the
        #   model refuses what it cannot ask (too many tokens, options it cannot read) before the watch is kept
        self.registry.watches[watch.id] = watch
        self.registry.save()
        return _reply(request, watch.as_dict(), status=201)

    def _watch(self, request) -> Watch:
        w = self.registry.watches.get(request.match_info["watch"])
        if w is None or w.stream != request.match_info["id"]:
            raise WatchError(f"stream {request.match_info['id']!r} has no watch {request.match_info['watch']!r}", status=404)
        return w

    async def get_watch(self, request):
        return _reply(request, self._watch(request).as_dict())

    async def remove_watch(self, request):
        w = self._watch(request)
        del self.registry.watches[w.id]
        self.registry.save()
        return _reply(request, {"removed": w.id})

    async def _timeline(self, stream_id: str) -> list[dict]:
        return await self._call(self.controller.timeline.remote(stream_id))

    async def _watch_ask(self, stream_id: str, question: str, start: float, end: float, options: list | None) -> dict:
        self.metrics_.watch_evaluations.labels(stream_id).inc()
        try:
            return await self._call(self.controller.ask.remote(stream_id, question, start, end, options))
        except Exception:
            self.metrics_.watch_errors.labels(stream_id).inc()
            raise

    async def _publish(self, f: Firing) -> None:
        event = self.events.append(stream=f.watch.stream, watch=f.watch.id, question=f.watch.question, answer=f.answer,
                                   start=f.start, end=f.end, entry=f.entry,
                                   thumbnail=f"/streams/{quote(f.watch.stream)}/thumbnails/{f.entry}")
        self.metrics_.alerts.labels(f.watch.stream, f.watch.id).inc()
        self.metrics_.events.inc()
        self.webhooks.publish(event)

    async def list_events(self, request):
        q = request.query
        unknown = sorted(set(q) - {"since", "after", "stream", "watch", "limit", "last_event_id"})
        if unknown:
            raise web.HTTPBadRequest(text=f"unknown parameter(s) {', '.join(unknown)}; expected since, after, stream, watch, limit\n")
        try:
            since = float(q["since"]) if "since" in q else None
            after = int(q["after"]) if "after" in q else None
            limit = int(q["limit"]) if "limit" in q else None
            last = request.headers.get("Last-Event-ID") or q.get("last_event_id")
            last = int(last) if last else None
        except ValueError:
            raise web.HTTPBadRequest(text="since is unix seconds; after, limit and Last-Event-ID are integers\n") from None
        if limit is not None and limit < 1 or since is not None and since != since:
            raise web.HTTPBadRequest(text="limit must be >= 1 and since a number\n")
        if "text/event-stream" in request.headers.get("Accept", ""):
            return await sse(request, self.events, last if last is not None else after, q.get("stream"))
        return _reply(request, [e.as_dict() for e in self.events.list(after, since, q.get("stream"), q.get("watch"), limit)])

    # -- search and chat ----------------------------------------------------------------------------

    async def search(self, request):
        try:
            sq = SearchQuery.from_params(request.query, self.cfg.server.max_question_chars, self.cfg.api.search_limit)
        except SearchError as e:
            raise web.HTTPBadRequest(text=f"{e}\n") from None
        with self.metrics_.search_seconds.time():
            results = await self._call(self.controller.search.remote(sq.q, sq.streams, sq.start, sq.end, sq.limit))
        return _reply(request, results)

    async def chat(self, request):
        raw = await request.read()
        try:
            req = openai_api.parse_chat(decode(raw))
        except ValueError as e:
            return (e if isinstance(e, openai_api.ChatError) else openai_api.ChatError(
                str(e) if isinstance(e, BodyError) else "the body is not valid JSON")).response()
        try:
            with self.metrics_.ask_seconds.time():
                answer = await self._call(self.controller.ask.remote(req.stream_id, req.question, req.start, req.end,
                                                                      req.options))
        except Exception as e:
            status, message = _error(e)
            return openai_api.ChatError(message, status, "model" if status == 404 else None).response()
        if req.stream:
            return await openai_api.stream_completion(request, req, answer)
        return web.json_response(openai_api.completion(req, answer))

    async def models(self, request):
        streams = await self._call(self.controller.list_streams.remote())
        return web.json_response(openai_api.models([s["id"] for s in streams],
                                                   {k: v["added"] for k, v in self.registry.streams.items()}))

    async def metrics(self, request):
        m = await self._call(self.controller.metrics.remote())
        m["streams"] = [self._local(s) for s in m["streams"]]
        self.metrics_.set_runtime(m)
        return web.Response(body=self.metrics_.exposition(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    # -- plumbing -----------------------------------------------------------------------------------

    @web.middleware
    async def _auth(self, request, handler):
        if request.path != "/health" and request.path not in page.PUBLIC_PATHS \
                and not request.path.startswith("/whip/"):  # WhipServer checks its publishers
            given = authorization(request)
            admin = any(hmac.compare_digest(given, f"Bearer {t}".encode()) for t in self.admin_tokens)
            viewer = any(hmac.compare_digest(given, f"Bearer {t}".encode()) for t in self.viewer_tokens)
            if not (admin or viewer):
                raise web.HTTPUnauthorized(text="bearer token required\n", headers={"WWW-Authenticate": "Bearer"})
            request[ROLE] = "admin" if admin else "viewer"
            if not admin and request.method not in ("GET", "HEAD", "OPTIONS") and not request.path.endswith(VIEWER_POSTS):
                raise web.HTTPForbidden(text="a viewer token may read, ask, search and chat; this needs an admin token\n")
        return await handler(request)

    @web.middleware
    async def _errors(self, request, handler):
        route = request.match_info.route.resource.canonical if request.match_info.route.resource else "unmatched"
        try:
            response = await handler(request)
        except web.HTTPException as e:
            self.metrics_.requests.labels(route, e.status).inc()
            raise
        except Exception as e:
            status, message = _error(e)
            self.metrics_.requests.labels(route, status).inc()
            if status == 500:  # a bug of ours, not the client's doing: worth its traceback
                log.exception("%s %s", request.method, route)
            return _reply(request, {"error": message}, status=status)
        self.metrics_.requests.labels(route, response.status).inc()
        return response

    async def _call(self, ref):
        return await asyncio.wait_for(ref, self.timeout)


def _error(e: Exception) -> tuple[int, str]:
    cause = getattr(e, "cause", None) or e  # Ray wraps an actor's exception; its cause is the original
    if isinstance(cause, (RequestError, WatchError)):
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

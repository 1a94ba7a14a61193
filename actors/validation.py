"""Untrusted request bytes in, typed values or a 4xx out: the one validation layer of the HTTP gateway.

    app = web.Application(middlewares=[..., Guard(cfg.server).middleware, ...])
    body = await read_object(request, {"id": str, "source": str}, {"start": float})
    value = decode(raw_bytes)                 # any JSON value, checked; BodyError (a ValueError) if not
    ok = hmac.compare_digest(authorization(request), b"Bearer " + token.encode())
    runner = web.AppRunner(app, logger=CLIENT_ERROR_LOGGER)

What it stands between the network and the handlers for:
- headers: an Authorization header with bytes that are not UTF-8 (aiohttp hands them over as surrogate
  escapes) is compared as bytes, never encoded as text;
- bodies: read whole under a deadline (a client that declares a longer Content-Length than it sends gets
  408, not a connection held open), bodies that do not decompress as their Content-Encoding says get 400;
- JSON and msgpack: nesting deeper than MAX_DEPTH, NaN and infinities, strings with lone surrogates or
  NUL, fields of the wrong type, unknown fields: each a 400 that says which;
- path parameters: text that is not UTF-8 or has control characters is refused before any lookup;
- CORS: browsers on the configured origins (none by default) may call the API and publish over WHIP;
  preflights are answered here, before authentication, and `Location` is exposed (WHIP's session URL);
- the log: a malformed request costs one line, never a traceback.
"""
from __future__ import annotations

import asyncio
import json
import logging
import math
from urllib.parse import urlsplit

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestPayloadError

from configs import ServerConfig
from stream.codec import CodecError, unpackb

MSGPACK = "application/msgpack"
MAX_DEPTH = 32  # nesting of a request body; the API's deepest is 2 (an object holding a list)
BODY_METHODS = ("POST", "PUT", "PATCH", "DELETE")
CORS_METHODS = "GET, POST, DELETE, OPTIONS"
CORS_HEADERS = "Authorization, Content-Type, Accept"
CORS_MAX_AGE = "600"


class BadRequest(web.HTTPBadRequest):
    """A 400 whose text says what is wrong with the request."""

    def __init__(self, message: str):
        super().__init__(text=message.rstrip("\n") + "\n")


ROLE = web.RequestKey("role", str)  # "admin" or "viewer": set by the gateway's auth from the bearer token


def authorization(request: web.BaseRequest) -> bytes:
    """The Authorization header as the bytes it was sent as: bytes that are not UTF-8 reach us as surrogate
    escapes, which plain `.encode()` refuses."""
    return request.headers.get("Authorization", "").encode("utf-8", "surrogateescape")




def clean_text(value: str, what: str) -> str:
    """`value` if it is valid Unicode text (no lone surrogates, no NUL); else BadRequest naming `what`."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise BadRequest(f"{what} is not valid Unicode text (a lone surrogate?)") from None
    if "\x00" in value:
        raise BadRequest(f"{what} contains a NUL character")
    return value


def url_scheme(spec: str, what: str = "source") -> str:
    """The scheme of a URL-like source spec; a URL Python cannot split (an unclosed IPv6 bracket) is a 400."""
    try:
        return urlsplit(spec).scheme
    except ValueError as e:
        raise BadRequest(f"malformed {what} {spec!r}: {e}") from None


def path_param(request: web.Request, name: str) -> str:
    """A path parameter as text with no control characters (404: nothing can be named that way)."""
    value = request.match_info[name]
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise web.HTTPNotFound(text=f"no such {name}\n") from None
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise web.HTTPNotFound(text=f"no such {name}\n")
    return value


async def read_object(request: web.Request, required: dict[str, type | tuple], optional: dict | None = None) -> dict:
    """The request's JSON (or, with Content-Type application/msgpack, msgpack) object: the required keys
    present and not null, no other keys than these, each value of its type. Numbers are finite; `float`
    accepts ints; `list` holds text only (the API's lists are options)."""
    raw = await request.read()  # the Guard has read it already, under its deadline and size limit
    try:
        body = decode(raw, msgpack=request.content_type == MSGPACK)
    except BodyError as e:
        raise BadRequest(str(e)) from None
    if not isinstance(body, dict):
        raise BadRequest("the body must be an object")
    types = {**required, **(optional or {})}
    for key, value in body.items():
        if key not in types:
            raise BadRequest(f"unknown field {key!r}; expected {', '.join(types)}")
        want = types[key] if isinstance(types[key], tuple) else (types[key],)
        if value is None or object in want:  # object: the route checks it itself
            continue
        if float in want:
            want = (*want, int)
        if isinstance(value, bool) and bool not in want or not isinstance(value, want):
            raise BadRequest(f"field {key!r} has the wrong type")
        if list in want and isinstance(value, list) and not all(isinstance(v, str) for v in value):
            raise BadRequest(f"field {key!r} must be a list of strings")
    missing = [k for k in required if body.get(k) is None]
    if missing:
        raise BadRequest(f"missing field(s): {', '.join(missing)}")
    return body


class BodyError(ValueError):
    """A body that does not decode to a value the API can take; the message says why."""


def decode(raw: bytes, msgpack: bool = False):
    """A request body decoded from JSON (or msgpack) and checked by `check_value`; else BodyError."""
    kind = "msgpack" if msgpack else "JSON"
    try:
        value = unpackb(raw, max_bytes=len(raw) + 1) if msgpack else json.loads(raw, parse_constant=_no_constant)
    except BodyError:
        raise
    except (CodecError, ValueError, RecursionError):  # RecursionError: JSON nested past Python's stack
        raise BodyError(f"the body is not valid {kind}") from None
    check_value(value)
    return value


def _no_constant(name: str):
    raise BodyError(f"the body holds {name}, which is not a number")


def check_value(value) -> None:
    """Refuse (BodyError) a decoded body nested deeper than MAX_DEPTH, with a number that is not finite, or
    with text that is not valid Unicode or holds NUL (keys included). Iterative: the depth it can be given
    is not Python's."""
    stack = [(value, 1)]
    while stack:
        v, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise BodyError(f"the body is nested deeper than {MAX_DEPTH} levels")
        if isinstance(v, float) and not math.isfinite(v):
            raise BodyError("the body holds a number that is not finite (NaN or infinity)")
        if isinstance(v, str):
            try:
                clean_text(v, "a string in the body")
            except BadRequest as e:
                raise BodyError(e.text.strip()) from None
        elif isinstance(v, dict):
            stack.extend((k, depth + 1) for k in v)
            stack.extend((x, depth + 1) for x in v.values())
        elif isinstance(v, (list, tuple)):
            stack.extend((x, depth + 1) for x in v)


class Guard:
    """The middleware every request passes first: CORS, then the body read under a deadline.

    Preflights (OPTIONS with Access-Control-Request-Method) from an allowed origin are answered 204 here,
    before authentication (a browser sends no credentials with them); from any other origin, 403. Every
    answer to an allowed origin carries Access-Control-Allow-Origin and exposes Location.
    """

    def __init__(self, cfg: ServerConfig):
        self.origins = frozenset(cfg.cors_origins)
        self.body_timeout = cfg.body_timeout

    @web.middleware
    async def middleware(self, request: web.Request, handler):
        origin = request.headers.get("Origin")
        allowed = origin is not None and origin in self.origins
        if request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers:
            if not allowed:
                raise web.HTTPForbidden(text="this origin may not call the API (server.cors_origins)\n")
            return web.Response(status=204, headers=self._cors(origin) | {
                "Access-Control-Allow-Methods": CORS_METHODS, "Access-Control-Allow-Headers": CORS_HEADERS,
                "Access-Control-Max-Age": CORS_MAX_AGE})
        try:
            for name in request.match_info:
                path_param(request, name)
            if request.method in BODY_METHODS and request.body_exists:
                await self._read(request)
            response = await handler(request)
        except web.HTTPException as e:
            if allowed:
                e.headers.update(self._cors(origin))
            raise
        if allowed:
            response.headers.update(self._cors(origin))
        return response

    async def _read(self, request: web.Request) -> None:
        try:
            await asyncio.wait_for(request.read(), self.body_timeout)  # cached: handlers' read() returns it
        except asyncio.TimeoutError:
            raise web.HTTPRequestTimeout(text=f"the body did not arrive within {self.body_timeout:g} s\n") from None
        except (HttpProcessingError, RequestPayloadError) as e:  # e.g. a gzip Content-Encoding over bytes that are not gzip
            raise BadRequest(f"the body cannot be read: {str(e).splitlines()[-1].strip() or type(e).__name__}") from None

    @staticmethod
    def _cors(origin: str) -> dict[str, str]:
        return {"Access-Control-Allow-Origin": origin, "Access-Control-Expose-Headers": "Location", "Vary": "Origin"}


class _OneLine(logging.Filter):
    """aiohttp logs a request it cannot parse (bad bytes in a header, a broken request line) with its
    traceback, at ERROR: anyone could fill the disk. Such a client's fault becomes one INFO line."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, (HttpProcessingError, RequestPayloadError, ConnectionError)):
            record.msg = f"{record.getMessage()}: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            record.args, record.exc_info, record.exc_text = (), None, None
            record.levelno, record.levelname = logging.INFO, "INFO"
        return True


CLIENT_ERROR_LOGGER = logging.getLogger("cubestream.http")
CLIENT_ERROR_LOGGER.addFilter(_OneLine())

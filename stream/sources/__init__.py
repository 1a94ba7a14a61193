"""Sources: every way frames come in, opened from a URL-like spec.

    source = open_source("rtsp://user:pw@cam/stream1")              # rtsp_transport="udp" to override
    source = open_source("file:///clips/a.mp4?realtime=1&loop=1")   # or a plain path
    source = open_source("synth://?seed=3&fps=4&speed=1&width=128&height=128")
    source = open_source("whip://cam1", whip=whip_server)           # see stream.sources.whip
    async with Sampler(source) as frames: ...                       # see stream.sampler

Keyword arguments override fields of the SourceConfig (timeouts, backoff, transport) for this source.
A malformed spec raises ValueError at once; a camera that cannot be reached is retried, and its
status says why.
"""
from __future__ import annotations

import dataclasses
import typing
from urllib.parse import parse_qsl, unquote, urlsplit

from configs import SourceConfig
from stream.sources.av_source import FileSource, RtspSource
from stream.sources.source import Source, SourceError, SourceFailed
from stream.sources.status import SourceStatus
from stream.sources.whip import WhipServer, WhipSource

__all__ = ["open_source", "Source", "SourceError", "SourceFailed", "SourceStatus", "WhipServer", "WhipSource"]


def open_source(spec: str, cfg: SourceConfig | None = None, *, whip: WhipServer | None = None, **overrides) -> Source:
    cfg = dataclasses.replace(cfg or SourceConfig(), **overrides)
    try:
        u = urlsplit(spec)
    except ValueError as e:  # e.g. an unclosed IPv6 bracket
        raise ValueError(f"malformed source spec {spec!r}: {e}") from None
    if u.scheme in ("rtsp", "rtsps"):
        try:
            port = u.port  # raises on a port that is not a number in range
        except ValueError as e:
            raise ValueError(f"malformed RTSP URL {spec!r}: {e}") from None
        if not u.hostname or " " in spec or port == 0:
            raise ValueError(f"malformed RTSP URL {spec!r}: expected rtsp://[user:password@]host[:port]/path")
        return RtspSource(spec, cfg)
    if u.scheme == "file" or (u.scheme == "" and spec):
        params = _params(u.query, {"realtime": bool, "loop": bool}) if u.scheme else {}
        return FileSource(unquote(u.path) if u.scheme else spec, cfg, **params)
    if u.scheme == "synth":
        return _synth(spec, u.query, cfg)
    if u.scheme == "whip":
        if whip is None:
            raise ValueError(f"{spec!r}: a whip:// source needs the WhipServer it is published to (whip=...)")
        if not u.netloc or u.path not in ("", "/"):
            raise ValueError(f"malformed WHIP spec {spec!r}: expected whip://STREAM_ID")
        return whip.source(u.netloc)
    raise ValueError(f"unsupported source {spec!r}: expected rtsp://, rtsps://, file://, a path, synth:// or whip://")


def _synth(spec: str, query: str, cfg: SourceConfig) -> Source:
    from stream.sources.synth_source import SynthSource  # the world and its numpy rendering load on demand
    from stream.synth import SynthParams, SynthWorld

    world_params = typing.get_type_hints(SynthParams)
    p = _params(query, {"seed": int, "fps": float, "speed": float, "duration": float, **world_params})
    seed, fps, speed, duration = p.pop("seed", 0), p.pop("fps", 4.0), p.pop("speed", 1.0), p.pop("duration", None)
    if fps <= 0 or speed < 0 or (duration is not None and duration < 0):
        raise ValueError(f"{spec!r}: fps must be > 0, speed and duration >= 0")
    return SynthSource(spec, cfg, SynthWorld(seed, **p), fps, speed, duration)


def _params(query: str, types: dict[str, type]) -> dict:
    """Query parameters parsed to the given types: 1/0/true/false for bools, commas for tuples."""
    out = {}
    for key, value in parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query)):
        tp = types.get(key)
        if tp is None:
            raise ValueError(f"unknown parameter {key!r}; known: {', '.join(sorted(types))}")
        try:
            if tp is bool:
                out[key] = {"1": True, "true": True, "0": False, "false": False}[value.lower()]
            elif typing.get_origin(tp) is tuple:
                out[key] = tuple(value.split(","))
            else:
                out[key] = tp(value)
        except (KeyError, ValueError):
            raise ValueError(f"parameter {key}={value!r} is not a valid {getattr(tp, '__name__', tp)}") from None
    return out

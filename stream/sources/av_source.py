"""RTSP/RTSPS cameras and media files, decoded by FFmpeg through PyAV."""
from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Iterator
from urllib.parse import urlsplit, urlunsplit

import av
from av.codec.hwaccel import HWAccel

from configs import SourceConfig
from stream.frame import Frame
from stream.sources.source import Keep, Source, SourceError, SourceFailed


def masked(url: str) -> str:
    """The URL with its password replaced by ***: statuses and errors are shown to anyone with the API."""
    u = urlsplit(url)
    if u.password is None:
        return url
    return urlunsplit(u._replace(netloc=u.netloc.replace(f":{u.password}@", ":***@", 1)))


class RtspSource(Source):
    """An RTSP(S) camera. TCP by default (interleaved RTP passes firewalls and loses nothing), UDP on request.
    FFmpeg's socket timeout and PyAV's open/read timeouts turn a silent camera into an error, and a camera
    that hangs up ends decode() without one; both lead to a reconnect. PyAV's read timeout is at most the
    frame watchdog's, so a read blocked on a camera that sends RTCP but no media ends with the watchdog."""

    camera = True

    def __init__(self, url: str, cfg: SourceConfig):
        super().__init__(masked(url), cfg)
        self.url = url
        self.options = {"rtsp_transport": cfg.rtsp_transport, "timeout": str(int(cfg.read_timeout * 1e6))}

    def _read(self, keep: Keep) -> Iterator[Frame]:
        cfg, t0 = self.cfg, time.monotonic()
        hwaccel = hardware(self.status.spec, cfg)
        try:
            container = av.open(self.url, options=self.options, hwaccel=hwaccel,
                                timeout=(cfg.open_timeout, min(cfg.read_timeout, cfg.frame_timeout)))
        except (av.FFmpegError, OSError) as e:
            raise SourceError(f"{self.status.spec}: cannot open: {self._explain(e, time.monotonic() - t0)}") from e
        try:
            yield from decode(self, container, keep, realtime=False)
        except (av.FFmpegError, OSError) as e:
            raise SourceError(f"{self.status.spec}: {self._explain(e, None)}") from e
        finally:
            container.close()

    def _explain(self, e: Exception, opening_took: float | None) -> str:
        if isinstance(e, av.ExitError):  # PyAV's interrupt callback: the read timeout ran out
            if opening_took is None and not self._fresh:
                return self.stall_message(min(self.cfg.read_timeout, self.cfg.frame_timeout))
            return f"no data for {min(self.cfg.read_timeout, self.cfg.frame_timeout):g} s (read timeout)"
        if isinstance(e, av.InvalidDataError):
            if opening_took is not None and opening_took >= 0.9 * self.cfg.open_timeout:
                return f"no answer within {self.cfg.open_timeout:g} s (open timeout)"
            if opening_took is None and not self._fresh:  # it streamed, then broke off (FFmpeg's socket timeout)
                return f"the stream broke off mid-session ({e.strerror or 'invalid data'}): stalled or cut"
            return "the server does not speak RTSP, or sent a stream FFmpeg cannot read"
        return getattr(e, "strerror", None) or str(e)


class FileSource(Source):
    """A media file in any container FFmpeg reads; optionally paced at its own frame rate (like a camera)
    and looped. Unpaced, it is not live: a slow consumer makes it wait instead of losing frames."""

    def __init__(self, path: str, cfg: SourceConfig, realtime: bool = False, loop: bool = False):
        super().__init__(path, cfg)
        self.path, self.realtime = path, realtime
        self.live, self.restart_on_end = realtime, loop

    def _read(self, keep: Keep) -> Iterator[Frame]:
        hwaccel = hardware(self.path, self.cfg)
        try:
            container = av.open(self.path, hwaccel=hwaccel)
        except (av.FFmpegError, OSError) as e:  # a file does not get better by retrying
            raise SourceFailed(f"{self.path}: cannot open: {getattr(e, 'strerror', None) or e}") from e
        try:
            yield from decode(self, container, keep, realtime=self.realtime)
        except (av.FFmpegError, OSError) as e:
            raise SourceFailed(f"{self.path}: {getattr(e, 'strerror', None) or e}") from e
        finally:
            container.close()

    def _retry_delay(self) -> float:
        return 0.0  # looping: start over at once


def hardware(spec: str, cfg: SourceConfig) -> HWAccel | None:
    """The hardware decoder `cfg.hwaccel` names, its device opened now: a machine without it fails the
    source with an error that says so, not each packet with FFmpeg's."""
    if cfg.hwaccel is None:
        return None
    accel = HWAccel(device_type=cfg.hwaccel, allow_software_fallback=True)
    try:
        accel.create(av.Codec("h264", "r"))
    except (av.FFmpegError, OSError) as e:
        raise SourceFailed(f"{spec}: hardware decoding (source.hwaccel: {cfg.hwaccel}) is not available on this "
                           f"machine ({getattr(e, 'strerror', None) or e}); set source.hwaccel: null") from e
    return accel


def decode(source: Source, container, keep: Keep, realtime: bool) -> Iterator[Frame]:
    """Decode the first video stream on `cfg.decode_threads` threads (without deblocking where
    `cfg.skip_loop_filter`); convert only the frames `keep` wants, reduced by libswscale (`source.resize`)
    on the way to RGB. A live camera decoded behind real time (the cores cannot keep up) is decoded at its
    keyframes only until it has caught up (see Lag).

    A live camera's packets are decoded in bursts of `cfg.decode_batch` seconds, each burst under
    `source.decode_gate`: a decoder woken for every frame finds its caches cold and costs about a quarter
    more per frame than one that decodes several in a row. A frame's arrival is when its packet was read,
    so the wait shows in the frame-to-memory latency."""
    if not container.streams.video:
        raise SourceFailed(f"{source.status.spec}: no video stream")
    stream = container.streams.video[0]
    stream.codec_context.thread_count = source.cfg.decode_threads
    if source.cfg.skip_loop_filter:
        stream.codec_context.options = {"skip_loop_filter": "all"}  # read when the decoder opens, at its first packet
    lag = Lag(source.cfg.max_lag) if source.live and not realtime else None
    wait = source.cfg.decode_batch if lag is not None else 0.0
    gate = source.decode_gate or contextlib.nullcontext()
    start = None  # (stream time, wall time) of the first frame, for pacing
    burst: list[tuple[av.Packet, float, float | None, float]] = []  # read, not decoded: (packet, read, camera time, lag)
    away = 0.0  # seconds this thread spent elsewhere than reading since the last packet was read
    for packet in container.demux(stream):
        read = time.monotonic()
        camera_time = None if lag is None or packet.pts is None else float(packet.pts * stream.time_base)
        behind = 0.0 if camera_time is None else lag.read(camera_time, read, away)
        burst.append((packet, read, camera_time, behind))
        away = 0.0
        if packet.size and read - burst[0][1] < wait and len(burst) < MAX_BURST:
            continue  # (an empty packet is the end of the stream: flush)
        with gate:
            kept = list(decode_burst(source, burst, keep, lag))
        burst.clear()
        for frame in kept:
            if realtime:
                start = start or (frame.pts, frame.arrival)
                if (ahead := (frame.pts - start[0]) - (time.monotonic() - start[1])) > 0:
                    time.sleep(ahead)
                frame.arrival = time.monotonic()
            yield frame
        if source._closed:
            return
        away = time.monotonic() - read  # the gate, the decode and the frames' hand-over: the camera went on sending


MAX_BURST = 32  # packets: a camera read from far behind (its backlog comes at once) still shares the gate


def decode_burst(source: Source, burst: list, keep: Keep, lag: Lag | None) -> Iterator[Frame]:
    """The frames `keep` wants of the packets in `burst`, converted as each is decoded: a decoded frame is
    released before the next is decoded, so the decoder's frame pool stays as small as for one packet.
    Where the decode runs behind real time, `lag` skips packets (counted in status.frames_skipped): how
    far behind each packet was read, plus how long the burst has waited since it was complete (a packet's
    wait for the rest of its burst is by design, not a decoder falling behind)."""
    complete = burst[-1][1]
    for packet, read, camera_time, behind in burst:
        if camera_time is not None:
            skip = lag.skip(camera_time, behind, time.monotonic() - complete, packet.is_keyframe)
            source.status.lag = lag.lag
            if skip:
                source.status.frames_skipped += 1
                continue
        for vf in packet.decode():
            pts = source._decoded(vf.time, read)
            if keep(pts):
                yield Frame(source.to_rgb(vf), pts, read)


class Lag:
    """How far behind real time a live stream is decoded, and whether to skip its next packet.

    The baseline is the least (read time - camera time) of the session's packets: how far behind the
    camera's clock a packet read at once is. Lag is how much later than that a packet is decoded: the
    time it waited in the camera's socket while this stream's thread was away decoding, plus the time
    it waited in its burst and for the decode gate. Past `limit` seconds the stream is decoded at its
    keyframes only, at most one a second (a camera that sends only keyframes is thinned too), which costs
    a fraction of a full decode, so it catches up; skipping stops at a keyframe once its reading has caught
    up (read under a quarter of the limit behind). The wait for the decode gate is the same for every
    stream: past capacity it sends each stream in turn to its keyframes for a while, so all shed frames
    alike, not a few all of theirs, and every one stays within about `limit` of real time. A packet read
    later than the one before by more than the time the thread was away (plus a quarter of the limit)
    shows a step in the camera's clock (FFmpeg re-basing an RTSP session's times on its first RTCP report,
    a camera rebooted) or in the network's delay, not a decoder falling behind: it becomes the new baseline.
    """

    def __init__(self, limit: float):
        self.limit = limit
        self.base = math.inf
        self.lag = 0.0  # at the last packet decoded
        self.skipping = False
        self._last_offset: float | None = None
        self._last_key = -math.inf  # camera time of the last keyframe decoded while skipping

    def read(self, camera_time: float, now: float, away: float = 0.0) -> float:
        """A packet read at `now`, `away` seconds of decoding after the packet before it: how far behind
        real time it was read."""
        offset = now - camera_time
        if self._last_offset is not None and offset - self._last_offset - away > self.limit / 4:
            self.base = offset  # a step, not a backlog
        self._last_offset = offset
        self.base = min(self.base, offset)
        return offset - self.base

    def skip(self, camera_time: float, behind: float, waited: float, keyframe: bool) -> bool:
        """Whether to skip a packet read `behind` seconds behind real time that has waited `waited` since."""
        lag = self.lag = behind + waited
        if not self.skipping:
            if lag <= self.limit:
                return False
            self.skipping, self._last_key = True, -math.inf
        if not keyframe or camera_time - self._last_key < 1.0:
            return True
        self._last_key = camera_time
        if behind < self.limit / 4:
            self.skipping = False
        return False  # the keyframe is decoded: the frames after it need it, and it is a frame to sample

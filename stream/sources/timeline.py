"""Stream time: one clock per stream that only moves forward, across reconnects and source clock jumps."""
from __future__ import annotations

from dataclasses import dataclass

MIN_STEP = 1e-3  # seconds between two frames when nothing better is known
MAX_DRIFT = 0.5  # seconds a live source's own clock may run apart from the arrival clock before re-anchoring


@dataclass
class _Anchor:
    raw: float  # a frame's own timestamp in its session
    t: float  # the stream time it was given


class Timeline:
    """Maps each session's own timestamps onto one stream clock starting at 0.

    Within a session, stream time follows the source's timestamps (exact frame spacing). A reconnect
    restarts the camera's clock (RTSP, WebRTC) or a file's (looping): the new session is anchored where
    the last one stopped plus the wall time the gap took, counted once. Frames without a timestamp
    (RTSP's first frames, before the first RTCP report) follow the arrival clock until one arrives.

    A live source (`follow_arrival`) is re-anchored to the arrival clock (stream time = seconds since its
    first frame arrived) whenever its timestamps run more than MAX_DRIFT from it or step back: a camera rebooted behind a restreamer, an NVR restarting its
    pipeline, RTP timestamps reset, FFmpeg re-basing a session's times on its first RTCP report. So its
    stream time stays monotonic and within about MAX_DRIFT of the arrival clock, and a backward jump never
    holds sampling back until the stream catches up with its old time. A source whose timestamps are the
    truth (a file played faster than real time, the synthetic world's clock) does not follow arrival.
    """

    def __init__(self, follow_arrival: bool = False):
        self.follow_arrival = follow_arrival
        self.last: float | None = None  # the last stream time handed out
        self.reanchors = 0  # times a live source's clock was re-anchored to arrival within a session
        self._origin = 0.0  # arrival of the first frame: stream time 0
        self._last_arrival = 0.0
        self._step = MIN_STEP  # the source's own last frame interval: the least gap a restart may leave
        self._anchor: _Anchor | None = None

    def new_session(self) -> None:
        self._anchor = None

    def stamp(self, raw: float | None, arrival: float) -> float:
        if self.last is None:
            t, self._origin = 0.0, arrival
        elif raw is None or self._anchor is None:
            t = self._by_arrival(arrival)
        else:
            a = self._anchor
            t = a.t + raw - a.raw
            if self.follow_arrival and (t < self.last or abs(t - (arrival - self._origin)) > MAX_DRIFT):
                t, self._anchor = self._by_arrival(arrival), None
                self.reanchors += 1
            elif t > self.last:  # only the source's own frame intervals, never a gap between sessions
                self._step = min(t - self.last, 1.0)
        if raw is not None and self._anchor is None:
            self._anchor = _Anchor(raw, t)
        if self.last is not None:
            t = max(t, self.last + 1e-6)  # a clock that steps back must not move stream time back
        self.last, self._last_arrival = t, arrival
        return t

    def _by_arrival(self, arrival: float) -> float:
        """Stream time by the arrival clock: a live source's time since its first frame; else the last
        stream time plus the arrival time since (a reconnect's gap, counted once), at least a frame interval."""
        if self.follow_arrival:
            return arrival - self._origin
        return self.last + max(arrival - self._last_arrival, self._step)

"""Stream time that only moves forward, across reconnects."""
from __future__ import annotations

MIN_STEP = 1e-3  # seconds between two frames when nothing better is known


class Timeline:
    """Maps each session's own timestamps onto one stream clock starting at 0.

    A reconnect restarts the camera's clock (RTSP, WebRTC) or a file's (looping), so each session is
    anchored where the last one stopped plus the wall time the gap took. Frames without a timestamp
    (RTSP's first frames, before the first RTCP report) follow the wall clock until one arrives.
    """

    def __init__(self):
        self.last: float | None = None  # the last stream time handed out
        self._last_arrival = 0.0
        self._step = MIN_STEP  # the last positive frame interval: the least gap a restart may leave
        self._anchor: tuple[float, float] | None = None  # (session timestamp, stream time) of one frame

    def new_session(self) -> None:
        self._anchor = None

    def stamp(self, raw: float | None, arrival: float) -> float:
        if self.last is None:
            t = 0.0
        elif raw is None or self._anchor is None:
            t = self.last + max(arrival - self._last_arrival, self._step)
        else:
            t = self._anchor[1] + raw - self._anchor[0]
        if raw is not None and self._anchor is None:
            self._anchor = (raw, t)
        if self.last is not None:
            if t - self.last > 0:
                self._step = t - self.last
            t = max(t, self.last + 1e-6)  # a camera clock that steps back must not move stream time back
        self.last, self._last_arrival = t, arrival
        return t

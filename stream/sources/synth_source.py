"""The synthetic camera (stream/synth.py) as a live source."""
from __future__ import annotations

import time
from collections.abc import Iterator

from configs import SourceConfig
from stream.frame import Frame
from stream.sources.source import Keep, Source
from stream.synth import SynthWorld


class SynthSource(Source):
    """Renders SynthWorld(seed) at `fps` frames per stream second. Stream time is world time, so frames line
    up with the world's ground-truth event log. Paced at `speed` times real time (a live camera), or as
    fast as the consumer takes frames with speed=0; ends after `duration` stream seconds if given.
    Only frames the consumer keeps are rendered."""

    restart_on_end = False

    def __init__(self, spec: str, cfg: SourceConfig, world: SynthWorld, fps: float, speed: float,
                 duration: float | None):
        super().__init__(spec, cfg)
        self.world, self.fps, self.speed, self.duration = world, fps, speed, duration
        self.live = speed > 0

    def _read(self, keep: Keep) -> Iterator[Frame]:
        start, k = time.monotonic(), 0
        while not self._closed:
            t = k / self.fps
            if self.duration is not None and t > self.duration:
                return
            if self.live and (ahead := start + t / self.speed - time.monotonic()) > 0:
                time.sleep(ahead)
            arrival = time.monotonic()
            pts = self._decoded(t, arrival)
            if keep(pts):
                yield Frame(self.world.frame_at(t), pts, arrival)
            k += 1

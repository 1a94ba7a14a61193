"""What a stream is doing right now: the record the runtime exposes over HTTP."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal

State = Literal["connecting", "connected", "reconnecting", "failed", "ended"]


@dataclass
class SourceStatus:
    spec: str  # the source's spec, with any password in it masked
    state: State = "connecting"
    frames_decoded: int = 0  # every frame the decoder produced
    frames_sampled: int = 0  # frames the sampler let through at its rate (converted to RGB)
    frames_dropped: int = 0  # sampled frames pushed out of the queue, or too old to deliver, because the consumer was slow
    frames_skipped: int = 0  # frames of a camera decoded behind real time, left undecoded to catch up (stream/sources/av_source.py)
    lag: float = 0.0  # seconds a live camera is decoded behind real time (RTSP; 0 where unknown)
    reconnects: int = 0
    last_error: str | None = None

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)

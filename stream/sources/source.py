"""A source: one camera's frames, across every disconnect, until it is closed or gives up."""
from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from configs import SourceConfig
from stream.frame import Frame
from stream.sources.backoff import Backoff
from stream.sources.status import SourceStatus
from stream.sources.timeline import Timeline

Keep = Callable[[float], bool]  # stream time -> whether the consumer wants this frame (see Sampler)


def keep_all(pts: float) -> bool:
    return True


class SourceError(Exception):
    """One session failed (refused, timed out, bad data); the source reconnects unless it has given up."""


class SourceFailed(SourceError):
    """The source gave up: its status is "failed" and the message carries the last error."""


class Source:
    """Base of every source. A subclass reads one session, either as blocking code in `_read` (run on a
    thread of its own, so FFmpeg's blocking reads never stall the event loop) or as async code in
    `_session`. This class strings sessions together: a clean end counts as a disconnect (a camera that
    hangs up is as gone as one that errors), reconnects wait out an exponential backoff, and stream time
    stays monotonic throughout.

    A camera (`camera`) also has a frame watchdog: once a session has decoded a frame (or, for a pushed
    source, has a publisher), `cfg.frame_timeout` seconds without the next one end the session with an
    error that says so, whatever the connection below still carries (RTCP reports, keep-alives); and its
    stream time follows the arrival clock (see Timeline).
    """

    live = True  # a live source is never made to wait: a slow consumer loses frames, the camera does not
    restart_on_end = True  # False: a clean end ends the source (a file played once)
    camera = False  # frames come at the camera's pace: watched for stalls, stream time kept to arrival
    # (width, height) of a decoded frame -> the size it is delivered at (Config.frame_size); None: as decoded
    resize: Callable[[int, int], tuple[int, int]] | None = None
    # Held while a packet decodes: a semaphore the sources of one ingest process share, so that no more
    # frames decode at once than there are cores (IngestWorker); None: no limit
    decode_gate: contextlib.AbstractContextManager | None = None

    def __init__(self, spec: str, cfg: SourceConfig):
        self.cfg = cfg
        self.max_retries = cfg.max_retries
        self.status = SourceStatus(spec)
        self.timeline = Timeline(follow_arrival=self.camera)
        self._last_frame: float | None = None  # when this session's last frame arrived (monotonic); None: not armed
        self._backoff = Backoff(cfg.backoff_initial, cfg.backoff_max, cfg.backoff_jitter)
        self._fresh = True  # no frame decoded yet in this session
        self._closed = False

    async def frames(self, keep: Keep = keep_all) -> AsyncIterator[Frame]:
        """Every frame for which `keep(pts)` holds, converted to RGB; other frames are decoded (later
        frames depend on them) but never converted. Raises SourceFailed once the source gives up."""
        st = self.status
        while not self._closed:
            self.timeline.new_session()
            self._fresh, self._last_frame = True, None
            try:
                async with contextlib.aclosing(self._session(keep)) as session:  # ends it now when we are closed
                    while (frame := await self._watched(anext(session, None))) is not None:
                        yield frame
                if self._closed or not self.restart_on_end:
                    break
                st.last_error = "stream ended"
            except SourceFailed as e:  # a session that knows retrying cannot help (a missing file)
                st.state, st.last_error = "failed", str(e)
                raise
            except SourceError as e:
                st.last_error = str(e)
            if self._closed:
                break
            if self.max_retries is not None and self._backoff.failures >= self.max_retries:
                st.state = "failed"
                raise SourceFailed(f"{st.spec}: gave up after {self._backoff.failures} retries: {st.last_error}")
            st.state, st.reconnects = "reconnecting", st.reconnects + 1
            await asyncio.sleep(self._retry_delay())
        st.state = "ended"

    def close(self) -> None:
        """Stop after the current frame; a session blocked in a read notices within the read timeout."""
        self._closed = True
        if self.status.state != "failed":
            self.status.state = "ended"

    def to_rgb(self, vf) -> np.ndarray:
        """A decoded av.VideoFrame as uint8 RGB [H, W, 3], reduced by `resize` in the same libswscale pass
        (area averaging: every source pixel counts, as in the encoder's antialiased resize)."""
        width, height = self.resize(vf.width, vf.height) if self.resize else (None, None)
        return vf.to_ndarray(width=width, height=height, format="rgb24", interpolation="AREA")

    def _decoded(self, raw_pts: float | None, arrival: float) -> float:
        """Book one decoded frame; returns its stream time. The first frame of a session is what proves
        a connection works, so that is where the state turns "connected" and the backoff resets."""
        if self._fresh:
            self._fresh = False
            self.status.state = "connected"
            self._backoff.reset()
        self.status.frames_decoded += 1
        self._last_frame = time.monotonic()  # the watchdog's clock: decoding goes on, however late the frame came in
        return self.timeline.stamp(raw_pts, arrival)

    def _retry_delay(self) -> float:
        return self._backoff.next()

    async def _watched(self, step):
        """Await the session's next frame; for a camera, under the frame watchdog."""
        if not self.camera:
            return await step
        task = asyncio.ensure_future(step)
        limit = self.cfg.frame_timeout
        try:
            while True:
                armed = self._last_frame is not None
                left = self._last_frame + limit - time.monotonic() if armed else limit
                done, _ = await asyncio.wait({task}, timeout=max(left, 0.01))
                if done:
                    return task.result()
                if armed and time.monotonic() - self._last_frame >= limit:
                    raise SourceError(f"{self.status.spec}: {self.stall_message(limit)}")
        finally:  # stalled, or we are cancelled: the session's step must be over before the session is closed
            if not task.done():
                task.cancel()  # a blocked read's thread exits at its read timeout (at most the watchdog's)
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task

    @staticmethod
    def stall_message(limit: float) -> str:
        return f"stalled: no video frame for {limit:g} s while the session stayed open (frame watchdog, source.frame_timeout)"

    async def _session(self, keep: Keep) -> AsyncIterator[Frame]:
        # One worker thread per session, so calls on the decoder never overlap: the generator's close
        # (which closes the container) queues behind a read still blocked when the consumer leaves.
        pool = ThreadPoolExecutor(1, thread_name_prefix="source")
        reader = self._read(keep)
        loop = asyncio.get_running_loop()
        try:
            while (frame := await loop.run_in_executor(pool, next, reader, None)) is not None:
                yield frame
        finally:
            pool.submit(reader.close)
            pool.shutdown(wait=False)

    def _read(self, keep: Keep) -> Iterator[Frame]:
        raise NotImplementedError

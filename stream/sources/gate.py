"""How many decoders of one process run at once, taken in turn."""
from __future__ import annotations

import threading
from collections import deque


class DecodeGate:
    """A context manager that lets at most `slots` threads in at once and the others in the order they came.

    A freed slot is handed to the longest waiter directly, so a thread that comes later cannot take it
    first. (threading.Semaphore lets it, and sends the waiter it woke to the back of the queue: with many
    cameras on few cores, some then wait seconds for a turn while others go round again.)"""

    def __init__(self, slots: int):
        if slots < 1:
            raise ValueError(f"a decode gate needs at least one slot, got {slots}")
        self._lock = threading.Lock()
        self._free = slots
        self._waiting: deque[threading.Lock] = deque()

    def __enter__(self) -> None:
        with self._lock:
            if self._free and not self._waiting:
                self._free -= 1
                return
            turn = threading.Lock()
            turn.acquire()
            self._waiting.append(turn)
        turn.acquire()  # released by the holder that hands this thread its slot

    def __exit__(self, *exc) -> None:
        with self._lock:
            if self._waiting:
                self._waiting.popleft().release()
            else:
                self._free += 1

"""Reconnect delays: exponential with jitter."""
from __future__ import annotations

import random


class Backoff:
    """Delays initial, 2*initial, 4*initial ... up to `maximum`, each shortened by a random fraction of up to
    `jitter`, so that many cameras lost at once (a switch rebooting) do not all come back in lockstep."""

    def __init__(self, initial: float, maximum: float, jitter: float):
        self.initial, self.maximum, self.jitter = initial, maximum, jitter
        self.failures = 0  # consecutive failed attempts

    def next(self) -> float:
        delay = min(self.maximum, self.initial * 2 ** self.failures)
        self.failures += 1
        return delay * (1.0 - self.jitter * random.random())

    def reset(self) -> None:
        self.failures = 0

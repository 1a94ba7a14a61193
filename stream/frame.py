"""A decoded frame as every source delivers it."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Frame:
    image: np.ndarray  # uint8 [H, W, 3], RGB
    pts: float  # stream time in seconds: monotonic within a stream, across reconnects too
    arrival: float  # time.monotonic() when the frame came in (its packet was read; a paced file: when it was due)

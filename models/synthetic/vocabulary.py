"""The synthetic world's closed vocabulary as its readers and training probes index it: every (colour, shape)
pair an object can be, and every event a "when" question can name."""
from __future__ import annotations

from stream.synth import COLOURS as _COLOURS, SHAPES

COLOURS = tuple(_COLOURS)
ATTRIBUTES = [(c, s) for c in COLOURS for s in SHAPES]
# What a "when" question names about an event (`stream.questions.when_key`): an enter or a leave by colour and
# shape, a colour change by its new colour.
EVENT_KEYS = ([("enter", c, s) for c, s in ATTRIBUTES] + [("leave", c, s) for c, s in ATTRIBUTES]
              + [("change", c) for c in COLOURS])

__all__ = ["COLOURS", "SHAPES", "ATTRIBUTES", "EVENT_KEYS"]

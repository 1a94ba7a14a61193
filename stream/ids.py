"""Stream ids: names users give streams, and also folder names in the snapshot store."""
from __future__ import annotations

import re

STREAM_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")  # a file name too: no slashes, no dot-dot


def check_stream_id(stream_id) -> str:
    if not isinstance(stream_id, str) or not STREAM_ID.fullmatch(stream_id):
        raise ValueError(f"a stream id is 1-64 of [A-Za-z0-9_.-], starting with a letter or digit; got {stream_id!r}")
    return stream_id

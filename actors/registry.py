"""The stream registry: which streams the service runs (id and source) and their watches, kept in one JSON
file in the state folder and replaced atomically on every change, so `cubestream serve` restarted (or
killed and started again) comes back with the same streams and watches; their memories come back from
their own stores (actors/worker.py).

    registry = Registry(state_dir / "registry.json")
    registry.add_stream("cam1", "rtsp://...")
    registry.watches["w1"] = watch; registry.save()
"""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path

from actors.watches import Watch
from stream.snapshot import write_atomic

log = logging.getLogger(__name__)

VERSION = 1


class Registry:
    def __init__(self, path: Path):
        self.path = Path(path)
        self.streams: dict[str, dict] = {}  # id -> {"source": spec, "added": unix s}
        self.watches: dict[str, Watch] = {}  # watch id -> watch
        self._load()

    def _load(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if not self.path.exists():
            return
        try:
            data = json.loads(self.path.read_text())
            if data.get("version") != VERSION:
                raise ValueError(f"version {data.get('version')!r}, expected {VERSION}")
            self.streams = {sid: dict(s) for sid, s in data["streams"].items()}
            self.watches = {w["id"]: Watch.from_dict(w) for w in data["watches"]}
        except (ValueError, KeyError, TypeError) as e:
            # written atomically, so only a hand edit or another version gets here: keep it aside, start empty
            aside = self.path.with_name(self.path.name + f".unreadable-{int(time.time())}")
            self.path.rename(aside)
            log.error("%s: %s; moved aside to %s, starting with no streams", self.path, e, aside)
            self.streams, self.watches = {}, {}

    def save(self) -> None:
        data = {"version": VERSION, "streams": self.streams, "watches": [w.as_dict() for w in self.watches.values()]}
        write_atomic(self.path, json.dumps(data, indent=1).encode())

    def add_stream(self, stream_id: str, source: str) -> None:
        self.streams[stream_id] = {"source": source, "added": time.time()}
        self.save()

    def remove_stream(self, stream_id: str) -> list[Watch]:
        """Forget a stream and its watches; returns the watches removed."""
        gone = [w for w in self.watches.values() if w.stream == stream_id]
        for w in gone:
            del self.watches[w.id]
        self.streams.pop(stream_id, None)
        self.save()
        return gone

    def stream_watches(self, stream_id: str) -> list[Watch]:
        return [w for w in self.watches.values() if w.stream == stream_id]

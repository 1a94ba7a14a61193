"""The gateway's Prometheus metrics, through prometheus_client.

The gateway's own counters (requests, question latency, watch evaluations and alerts, events, webhook
deliveries) are prometheus_client metrics updated where things happen. The runtime's per-stream figures
are read from the controller at each scrape (`set_runtime`) and exported by a collector. Counters an actor
keeps in memory start again at 0 when that actor restarts (an encoder or ingest actor after a crash); each
is exported as the sum over the actor's lives seen by this gateway (`Monotonic`), so it never goes back.
"""
from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

# name: (kind, help, where in a stream's status the value is)
PER_STREAM = {
    "frames_decoded": ("counter", "frames the source decoded", ("source", "frames_decoded")),
    "frames_sampled": ("counter", "frames the sampler let through", ("source", "frames_sampled")),
    "frames_dropped": ("counter", "sampled frames dropped for a slow consumer", ("source", "frames_dropped")),
    "frames_skipped": ("counter", "frames left undecoded to catch up with real time (decoding past capacity)",
                       ("source", "frames_skipped")),
    "decode_lag_seconds": ("gauge", "how far behind real time the camera is decoded", ("source", "lag")),
    "reconnects": ("counter", "source reconnects", ("source", "reconnects")),
    "frames_encoded": ("counter", "frames encoded into the stream's memory", ("encoder_counters", "frames")),
    "cubes": ("counter", "closed cubes", ("encoder_counters", "cubes")),
    "memory_tokens": ("gauge", "tokens held in the stream's rolling memory", ("encoder_counters", "memory_tokens")),
    "memory_entries": ("gauge", "entries in the stream's rolling memory", ("encoder_counters", "entries")),
    "frame_latency_p50_seconds": ("gauge", "frame arrival to memory, median", ("latency_p50",)),
    "frame_latency_p95_seconds": ("gauge", "frame arrival to memory, 95th percentile", ("latency_p95",)),
}


class Monotonic:
    """Running totals of counters that may restart at 0: a value below the last one seen starts a new life."""

    def __init__(self):
        self._last: dict[tuple, float] = {}
        self._offset: dict[tuple, float] = {}

    def __call__(self, key: tuple, raw: float) -> float:
        last = self._last.get(key)
        if last is not None and raw < last:
            self._offset[key] = self._offset.get(key, 0.0) + last
        self._last[key] = raw
        return self._offset.get(key, 0.0) + raw


class Metrics:
    def __init__(self):
        r = self.registry = CollectorRegistry()
        self.requests = Counter("cubestream_http_requests", "HTTP requests by route and status", ["route", "status"], registry=r)
        self.ask_seconds = Histogram("cubestream_ask_seconds", "question latency at the gateway", buckets=LATENCY_BUCKETS, registry=r)
        self.search_seconds = Histogram("cubestream_search_seconds", "search latency at the gateway", buckets=LATENCY_BUCKETS, registry=r)
        self.watch_evaluations = Counter("cubestream_watch_evaluations", "watch questions asked on closed cubes", ["stream"], registry=r)
        self.watch_errors = Counter("cubestream_watch_errors", "watch evaluations that failed (retried on the next cube)", ["stream"], registry=r)
        self.alerts = Counter("cubestream_watch_alerts", "alerts raised by watches", ["stream", "watch"], registry=r)
        self.events = Counter("cubestream_events", "events published", registry=r)
        self.webhooks = Counter("cubestream_webhook_deliveries", "webhook delivery outcomes: delivered, failed (retried), "
                                "gave_up, dropped (queue full)", ["url", "outcome"], registry=r)
        self._runtime = _RuntimeCollector()
        r.register(self._runtime)

    def set_runtime(self, snapshot: dict) -> None:
        """The controller's `metrics()` answer, for the next exposition."""
        self._runtime.snapshot = snapshot

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class _RuntimeCollector:
    def __init__(self):
        self.snapshot: dict | None = None
        self.monotonic = Monotonic()

    def collect(self):
        m = self.snapshot
        if m is None:
            return
        yield _gauge("streams", "streams served", len(m["streams"]))
        yield _gauge("encoders", "encoder actors placed", m["encoders"])
        yield _gauge("encoders_dead", "encoder actors lost with their node", m["encoders_dead"])
        moves = CounterMetricFamily("cubestream_stream_moves", "streams moved to another encoder")
        moves.add_metric([], m["stream_moves"])
        yield moves
        for name, (kind, help_, path) in PER_STREAM.items():
            family = (CounterMetricFamily if kind == "counter" else GaugeMetricFamily)(f"cubestream_{name}", help_, labels=["stream"])
            for s in m["streams"]:
                value = s
                for key in path:
                    value = value.get(key) if isinstance(value, dict) else None
                if value is None:
                    continue
                family.add_metric([s["id"]], self.monotonic((name, s["id"]), value) if kind == "counter" else value)
            yield family


def _gauge(name: str, help_: str, value: float) -> GaugeMetricFamily:
    g = GaugeMetricFamily(f"cubestream_{name}", help_)
    g.add_metric([], value)
    return g

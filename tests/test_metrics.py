"""The gateway's Prometheus metrics (actors/metrics.py) from a runtime snapshot, without a runtime; the live
exposition is tested in tests/test_runtime_local.py and tests/test_api_live.py."""
from actors.metrics import Metrics, Monotonic
from stream.sources.status import SourceStatus


def test_monotonic_counter_survives_restarts_at_zero():
    m = Monotonic()
    assert [m(("f", "cam"), v) for v in (5, 9, 2, 4, 0, 3)] == [5, 9, 11, 13, 13, 16]


def test_metrics_export_what_a_camera_past_capacity_sheds_and_how_far_behind_it_is():
    status = SourceStatus("rtsp://cam/1", "connected", frames_decoded=900, frames_sampled=120, frames_dropped=3,
                          frames_skipped=45, lag=0.62)
    metrics = Metrics()
    metrics.set_runtime({"streams": [{"id": "door", "source": status.as_dict(), "encoder_counters": {"frames": 117}}],
                         "encoders": 1, "encoders_dead": 0, "stream_moves": 0})
    text = metrics.exposition().decode()
    for line in ('cubestream_frames_skipped_total{stream="door"} 45.0', 'cubestream_decode_lag_seconds{stream="door"} 0.62',
                 'cubestream_frames_dropped_total{stream="door"} 3.0', 'cubestream_frames_encoded_total{stream="door"} 117.0'):
        assert line in text.splitlines(), line

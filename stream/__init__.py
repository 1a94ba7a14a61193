"""Media in and stream-side state: sources, sampling, the rolling memory, the msgpack codec."""

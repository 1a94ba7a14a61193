import numpy as np
import pytest
import torch

from stream.codec import CodecError, packb, unpackb


def test_round_trip_with_tensors_and_arrays():
    obj = {"t": torch.randn(3, 4), "bf": torch.randn(5).bfloat16(), "i": torch.arange(6).reshape(2, 3),
           "a": np.arange(4, dtype=np.int16), "empty": torch.zeros(0, 7), "nested": [1, "x", None, 2.5, b"raw"]}
    back = unpackb(packb(obj))
    for k in ("t", "bf", "i", "empty"):
        assert back[k].dtype == obj[k].dtype and torch.equal(back[k], obj[k])
    assert back["a"].dtype == np.int16 and (back["a"] == obj["a"]).all()
    assert back["nested"] == obj["nested"]


@pytest.mark.parametrize("data", [b"", b"\xc1", packb({"x": 1})[:-1], b"\xc7\x03\x02abc"])
def test_malformed_input_is_a_codec_error(data):
    with pytest.raises(CodecError):
        unpackb(data)


def test_size_limit_and_lying_headers():
    with pytest.raises(CodecError, match="exceeds"):
        unpackb(packb(torch.zeros(1000)), max_bytes=100)
    import msgpack
    lying = msgpack.ExtType(2, msgpack.packb(["float32", [1000, 1000], b"\x00" * 8]))
    with pytest.raises(CodecError, match="needs"):
        unpackb(msgpack.packb(lying))
    with pytest.raises(CodecError, match="dtype"):
        unpackb(msgpack.packb(msgpack.ExtType(1, msgpack.packb(["object", [1], b"\x00" * 8]))))

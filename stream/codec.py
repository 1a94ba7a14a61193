"""msgpack codec for the wire and for snapshots: tensors travel as raw bytes with dtype and shape.

Decoding is bounded (`max_bytes`), and every malformed input raises `CodecError`, never something
a caller would mistake for a bug: a snapshot file or a request body is untrusted input.
"""
from __future__ import annotations

import msgpack
import numpy as np
import torch

_NDARRAY, _TENSOR = 1, 2
_TORCH_DTYPES = {str(d).removeprefix("torch."): d for d in (
    torch.float32, torch.float16, torch.bfloat16, torch.float64, torch.int64, torch.int32, torch.int16,
    torch.int8, torch.uint8, torch.bool)}
_NUMPY_DTYPES = {"float32", "float16", "float64", "int64", "int32", "int16", "int8", "uint8", "bool"}
DEFAULT_MAX_BYTES = 256 * 2**20


class CodecError(ValueError):
    """Bytes that are not a valid cubestream message."""


def _default(obj):
    if isinstance(obj, torch.Tensor):
        t = obj.detach().cpu().contiguous()
        raw = t.view(torch.uint8).numpy().tobytes() if t.numel() else b""
        return msgpack.ExtType(_TENSOR, msgpack.packb([str(t.dtype).removeprefix("torch."), list(t.shape), raw]))
    if isinstance(obj, np.ndarray):
        a = np.ascontiguousarray(obj)
        if a.dtype.name not in _NUMPY_DTYPES:
            raise TypeError(f"cannot encode numpy dtype {a.dtype}")
        return msgpack.ExtType(_NDARRAY, msgpack.packb([a.dtype.name, list(a.shape), a.tobytes()]))
    if isinstance(obj, np.generic):
        return obj.item()
    raise TypeError(f"cannot encode {type(obj).__name__}")


def _ext_hook(code: int, data: bytes):
    try:
        dtype, shape, raw = msgpack.unpackb(data)
        shape = tuple(int(s) for s in shape)
    except Exception as e:
        raise CodecError(f"malformed array header: {e}") from e
    if code == _TENSOR:
        if dtype not in _TORCH_DTYPES:
            raise CodecError(f"unsupported tensor dtype {dtype!r}")
        dt = _TORCH_DTYPES[dtype]
        n = int(np.prod(shape, dtype=np.int64)) if shape else 1
        if len(raw) != n * dt.itemsize:
            raise CodecError(f"tensor of shape {shape} and dtype {dtype} needs {n * dt.itemsize} bytes, got {len(raw)}")
        if n == 0:
            return torch.empty(shape, dtype=dt)
        return torch.frombuffer(bytearray(raw), dtype=torch.uint8).view(dt).reshape(shape)
    if code == _NDARRAY:
        if dtype not in _NUMPY_DTYPES:
            raise CodecError(f"unsupported array dtype {dtype!r}")
        dt = np.dtype(dtype)
        n = int(np.prod(shape, dtype=np.int64)) if shape else 1
        if len(raw) != n * dt.itemsize:
            raise CodecError(f"array of shape {shape} and dtype {dtype} needs {n * dt.itemsize} bytes, got {len(raw)}")
        return np.frombuffer(raw, dtype=dt).reshape(shape).copy()
    raise CodecError(f"unknown extension type {code}")


def packb(obj) -> bytes:
    """Encode plain data (dicts, lists, numbers, str, bytes) with tensors and arrays inside."""
    return msgpack.packb(obj, default=_default, use_bin_type=True)


def unpackb(data: bytes, max_bytes: int = DEFAULT_MAX_BYTES):
    """Decode what `packb` wrote; raises CodecError on anything malformed or larger than `max_bytes`."""
    if len(data) > max_bytes:
        raise CodecError(f"message of {len(data)} bytes exceeds the limit of {max_bytes}")
    try:
        return msgpack.unpackb(data, ext_hook=_ext_hook, raw=False, strict_map_key=False,
                               max_bin_len=max_bytes, max_str_len=max_bytes, max_ext_len=max_bytes,
                               max_array_len=max_bytes, max_map_len=max_bytes)
    except CodecError:
        raise
    except Exception as e:  # msgpack raises several unrelated types for bad input
        raise CodecError(f"malformed msgpack: {e}") from e

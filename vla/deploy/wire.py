"""The policy server's wire format: msgpack maps whose numpy arrays travel as a msgpack
extension (dtype, shape, raw bytes). Only plain numeric dtypes are accepted: nothing is ever
unpickled, so a frame from an untrusted client cannot run code."""

from __future__ import annotations

import math

import msgpack
import numpy as np

NDARRAY = 1  # msgpack extension type code of a numpy array
ALLOWED_KINDS = "biuf"  # bool, signed/unsigned int, float: never object, void or string arrays


class WireError(ValueError):
    """A frame that is not valid msgpack or holds something other than plain data."""


def _default(obj):
    if isinstance(obj, np.ndarray):
        if obj.dtype.kind not in ALLOWED_KINDS:
            raise WireError(f"cannot send a numpy array of dtype {obj.dtype}")
        header = msgpack.packb([obj.dtype.str, list(obj.shape)])
        return msgpack.ExtType(NDARRAY, header + np.ascontiguousarray(obj).tobytes())
    if isinstance(obj, np.generic):
        return obj.item()
    raise WireError(f"cannot send an object of type {type(obj).__name__}")


def _ext_hook(code: int, data: bytes):
    if code != NDARRAY:
        raise WireError(f"unknown msgpack extension type {code}")
    unpacker = msgpack.Unpacker(raw=False)
    unpacker.feed(data)
    header = unpacker.unpack()
    # checked here so a hostile header gets a clear message rather than numpy's reshape error;
    # at most 32 dims (numpy's limit) keeps the size product cheap to compute
    if not (isinstance(header, list) and len(header) == 2 and isinstance(header[0], str) and isinstance(header[1], list)
            and len(header[1]) <= 32 and all(type(n) is int and n >= 0 for n in header[1])):
        raise WireError(f"bad numpy array header {header!r:.100}: expected [dtype string, list of sizes]")
    dtype_str, shape = header
    try:
        dtype = np.dtype(dtype_str)
    except TypeError:
        raise WireError(f"unknown numpy dtype {dtype_str!r:.40}") from None
    if dtype.kind not in ALLOWED_KINDS:
        raise WireError(f"numpy dtype {dtype_str!r} is not allowed")
    body = data[unpacker.tell():]
    if len(body) != dtype.itemsize * math.prod(shape):  # Python ints: a huge shape cannot wrap around to 0
        raise WireError(f"array of dtype {dtype_str} and shape {shape} does not match its {len(body)} bytes")
    return np.frombuffer(body, dtype=dtype).reshape(shape)


def pack(obj) -> bytes:
    return msgpack.packb(obj, default=_default, use_bin_type=True)


def unpack(data: bytes):
    if not isinstance(data, (bytes, bytearray)):
        raise WireError("expected a binary msgpack frame, got a text frame")
    try:
        return msgpack.unpackb(data, ext_hook=_ext_hook, raw=False, strict_map_key=True)
    except WireError:
        raise
    except Exception as e:  # msgpack's own errors name no field; say what happened
        raise WireError(f"not a valid msgpack frame ({type(e).__name__}: {e})") from None

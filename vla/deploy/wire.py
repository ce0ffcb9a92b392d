"""The policy server's wire format: msgpack maps whose numpy arrays travel as a msgpack
extension (dtype, shape, raw bytes). Frames from openpi clients (openpi-client's msgpack_numpy:
arrays as maps {"__ndarray__": True, "data", "dtype", "shape"}, numpy scalars as
{"__npgeneric__": True, "data", "dtype"}) are read too, and answered in that encoding. Only plain
numeric dtypes are accepted either way: nothing is ever unpickled, so a frame from an untrusted
client cannot run code."""

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


def _array(dtype_str, shape, body) -> np.ndarray:
    """An array from a dtype string, a shape and its raw bytes, each checked first, so a hostile
    frame gets a clear message rather than numpy's reshape error; at most 32 dims (numpy's limit)
    keeps the size product cheap to compute."""
    if not (isinstance(dtype_str, (str, bytes)) and isinstance(shape, (list, tuple)) and len(shape) <= 32
            and all(type(n) is int and n >= 0 for n in shape) and isinstance(body, (bytes, bytearray))):
        raise WireError(f"bad numpy array header {[dtype_str, shape]!r:.100}: expected a dtype string, a list of sizes and bytes")
    dtype = _dtype(dtype_str)
    if len(body) != dtype.itemsize * math.prod(shape):  # Python ints: a huge shape cannot wrap around to 0
        raise WireError(f"array of dtype {dtype.str} and shape {list(shape)} does not match its {len(body)} bytes")
    return np.frombuffer(body, dtype=dtype).reshape(shape)


def _dtype(dtype_str) -> np.dtype:
    try:
        dtype = np.dtype(dtype_str.decode() if isinstance(dtype_str, bytes) else dtype_str)
    except TypeError:
        raise WireError(f"unknown numpy dtype {dtype_str!r:.40}") from None
    if dtype.kind not in ALLOWED_KINDS:
        raise WireError(f"numpy dtype {dtype_str!r} is not allowed")
    return dtype


def _ext_hook(code: int, data: bytes):
    if code != NDARRAY:
        raise WireError(f"unknown msgpack extension type {code}")
    unpacker = msgpack.Unpacker(raw=False)
    unpacker.feed(data)
    header = unpacker.unpack()
    if not (isinstance(header, list) and len(header) == 2):
        raise WireError(f"bad numpy array header {header!r:.100}: expected [dtype string, list of sizes]")
    return _array(header[0], header[1], data[unpacker.tell():])


class _OpenpiDecoder:
    """msgpack object_hook for openpi's array maps; remembers whether the frame used them."""

    def __init__(self):
        self.seen = False

    def __call__(self, obj: dict):
        get = lambda k: obj.get(k, obj.get(k.encode()))  # openpi's keys are bytes; a JSON-minded client's, str
        if get("__ndarray__"):
            self.seen = True
            return _array(get("dtype"), get("shape"), get("data"))
        if get("__npgeneric__"):
            self.seen = True
            value = get("data")
            if not isinstance(value, (bool, int, float)):
                raise WireError(f"bad numpy scalar {value!r:.40}: expected a number")
            return _dtype(get("dtype")).type(value)
        return obj


def _openpi_default(obj):
    if isinstance(obj, np.ndarray):
        if obj.dtype.kind not in ALLOWED_KINDS:
            raise WireError(f"cannot send a numpy array of dtype {obj.dtype}")
        obj = np.ascontiguousarray(obj)
        return {b"__ndarray__": True, b"data": obj.tobytes(), b"dtype": obj.dtype.str, b"shape": list(obj.shape)}
    if isinstance(obj, np.generic):
        return obj.item()
    raise WireError(f"cannot send an object of type {type(obj).__name__}")


def pack(obj, encoding: str = "vla") -> bytes:
    """A frame in our encoding, or in openpi's (`encoding="openpi"`) for a client that spoke it."""
    return msgpack.packb(obj, default=_openpi_default if encoding == "openpi" else _default, use_bin_type=True)


def unpack_with_encoding(data: bytes):
    """(the frame's object, "openpi" if it carried openpi's array maps else "vla")."""
    if not isinstance(data, (bytes, bytearray)):
        raise WireError("expected a binary msgpack frame, got a text frame")
    decoder = _OpenpiDecoder()
    try:
        obj = msgpack.unpackb(data, ext_hook=_ext_hook, object_hook=decoder, raw=False, strict_map_key=True)
    except WireError:
        raise
    except Exception as e:  # msgpack's own errors name no field; say what happened
        raise WireError(f"not a valid msgpack frame ({type(e).__name__}: {e})") from None
    return obj, "openpi" if decoder.seen else "vla"


def unpack(data: bytes):
    return unpack_with_encoding(data)[0]

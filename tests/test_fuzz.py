"""Property-based tests: the wire decoder and the dataset reader fail only with their own errors.

A policy server reads frames from untrusted clients and training reads folders that may be
half-copied or damaged, so malformed input must end in WireError / DatasetError (which the
callers report), never in a stray exception from msgpack, numpy, pyarrow, PIL or json.
"""

import json
import math
import shutil
import tempfile
from pathlib import Path

import msgpack
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from vla.dataset.collection import dataset_features
from vla.dataset.reader import LeRobotDataset
from vla.dataset.format import DatasetError, LeRobotWriter
from vla.deploy.wire import NDARRAY, WireError, pack, unpack

# deadline=None: timings vary on a shared machine; .hypothesis/ (failure replays) ignores itself in git
FAST = settings(max_examples=150, deadline=None)
SLOW = settings(max_examples=50, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

# ---------------------------------------------------------------- wire

DTYPES = [np.dtype(t) for t in ("?", "i1", "i2", "i4", "i8", "u1", "u2", "u4", "u8", "f2", "f4", "f8", ">i4", ">f8")]
arrays = st.sampled_from(DTYPES).flatmap(
    lambda dt: hnp.arrays(dt, hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=4)))
scalars = (st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats()
           | st.text(max_size=20) | st.binary(max_size=20))
messages = st.recursive(
    scalars | arrays,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12)


def assert_same(a, b):
    """Exact equality: same types, arrays with the same dtype, shape and bytes, NaN == NaN."""
    if isinstance(a, np.ndarray):
        assert isinstance(b, np.ndarray) and a.dtype == b.dtype and a.shape == b.shape
        assert a.tobytes() == b.tobytes()
    elif isinstance(a, dict):
        assert isinstance(b, dict) and list(a) == list(b)
        for k in a:
            assert_same(a[k], b[k])
    elif isinstance(a, list):
        assert isinstance(b, list) and len(a) == len(b)
        for x, y in zip(a, b):
            assert_same(x, y)
    elif isinstance(a, float):
        assert type(b) is float and (math.isnan(a) and math.isnan(b) or a == b and math.copysign(1, a) == math.copysign(1, b))
    else:
        assert type(a) is type(b) and a == b


def decodes_or_wire_error(frame: bytes) -> None:
    try:
        unpack(frame)
    except WireError:
        pass  # any other exception fails the test


@FAST
@given(messages)
def test_wire_round_trip_is_exact(msg):
    assert_same(msg, unpack(pack(msg)))


@FAST
@given(st.binary(max_size=4096))
def test_wire_arbitrary_bytes_decode_or_raise_wire_error(frame):
    decodes_or_wire_error(frame)


@FAST
@given(messages, st.data())
def test_wire_mutated_frames_decode_or_raise_wire_error(msg, data):
    frame = bytearray(pack(msg))
    for _ in range(data.draw(st.integers(1, 4), label="edits")):
        op = data.draw(st.sampled_from(["flip", "insert", "delete", "truncate"]), label="op")
        pos = data.draw(st.integers(0, max(len(frame) - 1, 0)), label="pos")
        if op == "flip" and frame:
            frame[pos] ^= data.draw(st.integers(1, 255), label="xor")
        elif op == "insert":
            frame.insert(pos, data.draw(st.integers(0, 255), label="byte"))
        elif op == "delete" and frame:
            del frame[pos]
        elif op == "truncate":
            del frame[pos:]
    decodes_or_wire_error(bytes(frame))


# headers a hostile client could send in the array extension: odd dtypes, huge or negative
# shapes, wrong types; arbitrary bytes are unlikely to hit these
anything = st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats() | st.text(max_size=8)
dtype_strs = st.sampled_from(["<f4", "|u1", "|b1", ">i8", "|O", "<U3", "|V4", "<c8", "<M8[s]", "f4,f4", "(2,)f4", "S0"])
shapes = st.lists(st.integers(-3, 4) | st.sampled_from([2**31, 2**32, 2**62, 2**63 - 1, 2**64 - 1]), max_size=4)
headers = (st.tuples(dtype_strs | anything, shapes | anything).map(list)
           | st.lists(anything | dtype_strs | shapes, max_size=3))


def declared_size(header) -> int:
    """Bytes the header claims (computed as the decoder does), or an arbitrary small size."""
    try:
        n = np.dtype(header[0]).itemsize * math.prod(header[1])
    except Exception:
        return 3
    return n if type(n) is int and 0 <= n <= 4096 else 5


@FAST
@given(headers, st.booleans(), st.binary(max_size=64))
def test_wire_hostile_array_headers_raise_wire_error(header, matching, body):
    if matching:  # a body of the size the header claims, to get past the size check
        body = bytes(declared_size(header))
    decodes_or_wire_error(msgpack.packb({"a": msgpack.ExtType(NDARRAY, msgpack.packb(header) + body)}))


# ---------------------------------------------------------------- dataset folders

@pytest.fixture(scope="module")
def clean_dataset(tmp_path_factory) -> Path:
    """Three short episodes, one 16x16 camera, written by our writer (no simulator)."""
    root = tmp_path_factory.mktemp("fuzz") / "ds"
    writer = LeRobotWriter(root, fps=20, features=dataset_features(["agentview"], 16))
    rng = np.random.default_rng(0)
    for length, task in ((3, "pick"), (4, "place"), (2, "pick")):
        writer.add_episode({"observation.images.agentview": rng.integers(0, 256, (length, 16, 16, 3), dtype=np.uint8),
                            "observation.state": rng.normal(size=(length, 8)).astype(np.float32),
                            "action": rng.uniform(-1, 1, (length, 7)).astype(np.float32)}, task)
    return root


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=5)


def json_nodes(obj):
    """Every dict and list inside a parsed JSON document."""
    if isinstance(obj, (dict, list)):
        yield obj
        for v in (obj.values() if isinstance(obj, dict) else obj):
            yield from json_nodes(v)


def corrupt(path: Path, data) -> None:
    raw = path.read_bytes()
    modes = ["truncate", "overwrite", "replace", "delete"]
    if path.suffix == ".json":
        modes += ["edit_text", "edit_value"]
    mode = data.draw(st.sampled_from(modes), label="mode")
    if mode == "delete":
        path.unlink()
    elif mode == "truncate":
        path.write_bytes(raw[:data.draw(st.integers(0, len(raw) - 1), label="length")])
    elif mode == "overwrite":
        buf = bytearray(raw)
        for _ in range(data.draw(st.integers(1, 8), label="bytes")):
            buf[data.draw(st.integers(0, len(buf) - 1), label="at")] = data.draw(st.integers(0, 255), label="byte")
        path.write_bytes(bytes(buf))
    elif mode == "replace":
        path.write_bytes(data.draw(st.binary(max_size=2048), label="content"))
    elif mode == "edit_text":  # junk inserted into the text: mostly invalid JSON
        text = raw.decode()
        at = data.draw(st.integers(0, len(text)), label="at")
        path.write_text(text[:at] + data.draw(st.text(min_size=1, max_size=20), label="junk") + text[at:])
    else:  # valid JSON with one value replaced or one key dropped: a wrong schema, not a parse error
        doc = json.loads(raw)
        node = data.draw(st.sampled_from([n for n in json_nodes(doc) if n]), label="node")
        key = data.draw(st.sampled_from(list(node) if isinstance(node, dict) else range(len(node))), label="key")
        if isinstance(node, dict) and data.draw(st.booleans(), label="drop"):
            del node[key]
        else:
            node[key] = data.draw(json_values, label="value")
        path.write_text(json.dumps(doc))


@SLOW
@given(data=st.data())
def test_corrupt_dataset_file_raises_dataset_error(clean_dataset, data):
    """One damaged or missing file: the folder still loads, or DatasetError says where."""
    files = sorted(p.relative_to(clean_dataset) for p in clean_dataset.rglob("*") if p.is_file())
    rel = data.draw(st.sampled_from(files), label="file")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "ds"
        shutil.copytree(clean_dataset, root)
        corrupt(root / rel, data)
        try:
            ds = LeRobotDataset(root, action_horizon=3)
            for i in range(len(ds)):
                ds[i]
        except DatasetError as e:  # anything else fails the test
            # the message names the damaged file, or at least the dataset folder
            assert str(root) in str(e), f"{e} names neither {root / rel} nor {root}"

"""LeRobotDataset v3.0 on disk, written and validated without the `lerobot` package.

Layout (what the Hub's datasets use, so the same reader serves ours and theirs):
  meta/info.json, meta/stats.json, meta/tasks.parquet,
  meta/episodes/chunk-000/file-000.parquet   one row per episode (where its rows/frames live, its stats)
  data/chunk-XXX/file-XXX.parquet             frames; PNG images inside (dtype "image")
  videos/<key>/chunk-XXX/file-XXX.mp4         (read only: Hub datasets with dtype "video")

Our writer puts each episode in its own data file and rewrites the metadata atomically after
it, so a killed collection leaves no half episode: on reopen, files no episode row points to are
deleted and collection continues after the last complete episode.
"""

from __future__ import annotations

import io
import json
import os
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

CODEBASE_VERSION = "v3.0"
CHUNKS_SIZE = 1000
DATA_PATH = "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
VIDEO_PATH = "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
EPISODES_PATH = "meta/episodes/chunk-000/file-000.parquet"
QUANTILES = (0.01, 0.10, 0.50, 0.90, 0.99)
STAT_NAMES = ("min", "max", "mean", "std", "count", *(f"q{int(round(q * 100)):02d}" for q in QUANTILES))
DEFAULT_FEATURES = {
    "timestamp": {"dtype": "float32", "shape": [1], "names": None},
    "frame_index": {"dtype": "int64", "shape": [1], "names": None},
    "episode_index": {"dtype": "int64", "shape": [1], "names": None},
    "index": {"dtype": "int64", "shape": [1], "names": None},
    "task_index": {"dtype": "int64", "shape": [1], "names": None},
}


class DatasetError(ValueError):
    """A dataset folder that is missing something or has the wrong shape; the message says what."""


@contextmanager
def reading(path: Path):
    """Turn pyarrow's errors about a missing or damaged file (ArrowInvalid, OSError for bad
    thrift or snappy data, UnicodeDecodeError for bad strings, ...) into a DatasetError naming it."""
    try:
        yield
    except DatasetError:
        raise
    except (pa.ArrowException, OSError, ValueError, TypeError) as e:
        raise DatasetError(f"{path} is missing or damaged ({type(e).__name__}: {e})") from None


def image_feature(height: int, width: int) -> dict:
    return {"dtype": "image", "shape": [height, width, 3], "names": ["height", "width", "channels"]}


def vector_feature(names: list[str], dtype: str = "float32") -> dict:
    return {"dtype": dtype, "shape": [len(names)], "names": names}


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _write_table(path: Path, table: pa.Table) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    sink = io.BytesIO()
    pq.write_table(table, sink, compression="snappy")
    _atomic_write(path, sink.getvalue())


def numeric_stats(x: np.ndarray) -> dict:
    """LeRobot's per-feature statistics over axis 0."""
    x = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
    out = {"min": x.min(0), "max": x.max(0), "mean": x.mean(0), "std": x.std(0), "count": np.array([len(x)])}
    for name, q in zip(STAT_NAMES[5:], QUANTILES):
        out[name] = np.quantile(x, q, axis=0)
    return {k: v.tolist() for k, v in out.items()}


def image_stats(frames: np.ndarray, max_samples: int = 100) -> dict:
    """Per-channel statistics in [0, 1], shape (3, 1, 1), over a sample of frames [N, H, W, 3]."""
    idx = np.linspace(0, len(frames) - 1, min(max_samples, len(frames))).round().astype(int)
    px = frames[idx].reshape(-1, 3).astype(np.float64) / 255.0
    stats = numeric_stats(px)
    stats["count"] = [len(idx)]
    return {k: (v if k == "count" else [[[c]] for c in v]) for k, v in stats.items()}


def aggregate_stats(per_episode: list[dict]) -> dict:
    """Count-weighted pooling of per-episode statistics, as LeRobot aggregates them: min, max,
    mean and std are exact; a quantile is the count-weighted mean of the episodes' quantiles."""
    counts = np.array([s["count"][0] for s in per_episode], float)
    w = counts / counts.sum()
    get = lambda k: np.array([np.asarray(s[k], float) for s in per_episode])  # noqa: E731
    mean = np.tensordot(w, get("mean"), 1)
    var = np.tensordot(w, get("std") ** 2 + (get("mean") - mean) ** 2, 1)
    out = {"min": get("min").min(0), "max": get("max").max(0), "mean": mean, "std": np.sqrt(np.maximum(var, 0))}
    for k in per_episode[0]:
        if k.startswith("q"):
            out[k] = np.tensordot(w, get(k), 1)
    out = {k: v.tolist() for k, v in out.items()}
    out["count"] = [int(counts.sum())]
    return out


class LeRobotWriter:
    """Append episodes to a LeRobotDataset v3.0 folder; reopening an existing folder resumes it.

    features: {key: feature dict} for everything but the default columns; image features are
    "image" (PNG inside parquet, lossless, so what is read back is exactly what was written).
    """

    def __init__(self, root: str | Path, fps: int, features: dict, robot_type: str = "panda", recording: dict | None = None):
        """recording: how the episodes were made (e.g. the simulator's render settings), saved in
        info.json under "vla" so training and evaluation can match it."""
        self.root = Path(root)
        self.fps, self.robot_type, self.recording = int(fps), robot_type, dict(recording or {})
        self.features = {**features, **DEFAULT_FEATURES}
        self.image_keys = [k for k, f in features.items() if f["dtype"] == "image"]
        self.numeric_keys = [k for k, f in self.features.items() if f["dtype"] not in ("image", "video", "string")]
        self.episodes: list[dict] = []
        self.tasks: list[str] = []
        if (self.root / "meta" / "info.json").exists():
            self._resume()
        self.root.mkdir(parents=True, exist_ok=True)

    @property
    def num_episodes(self) -> int:
        return len(self.episodes)

    @property
    def num_frames(self) -> int:
        return sum(e["length"] for e in self.episodes)

    def _resume(self) -> None:
        info = json.loads((self.root / "meta" / "info.json").read_text())
        if info.get("fps") != self.fps or info["features"] != self.features:
            raise DatasetError(f"{self.root} holds a dataset with other features or fps; use a new folder")
        if info.get("vla", {}) != self.recording:
            raise DatasetError(f"{self.root} was recorded with {info.get('vla', {})}, not {self.recording}; use a new folder")
        self.episodes = pq.read_table(self.root / EPISODES_PATH).to_pylist()
        # the episodes table is the record of what is complete; everything else is derived from it
        self.tasks = list(dict.fromkeys(t for e in self.episodes for t in e["tasks"]))
        kept = {DATA_PATH.format(chunk_index=e["data/chunk_index"], file_index=e["data/file_index"]) for e in self.episodes}
        for f in (self.root / "data").rglob("*.parquet*"):
            if str(f.relative_to(self.root)) not in kept:
                f.unlink()  # an episode whose metadata never landed: collection will redo it
        self._write_meta()  # a run killed between two metadata files left them out of step

    def add_episode(self, frames: dict[str, np.ndarray], task: str) -> int:
        """frames: {feature key: array [T, ...]} for every non-default feature. Returns the episode index."""
        missing = [k for k in self.features if k not in frames and k not in DEFAULT_FEATURES]
        if missing:
            raise DatasetError(f"episode is missing features {missing}")
        length = len(next(iter(frames.values())))
        for k, v in frames.items():
            want = tuple(self.features[k]["shape"])
            if len(v) != length or tuple(np.shape(v)[1:]) != want:
                raise DatasetError(f"feature {k!r} has shape {np.shape(v)}, expected [{length}, {', '.join(map(str, want))}]")
        start = self.num_frames
        ep = len(self.episodes)
        cols = self._index_columns(length, ep, start, task)
        arrays, ep_stats = {}, {}
        for k, f in self.features.items():
            v = cols[k] if k in cols else np.asarray(frames[k])
            if f["dtype"] == "image":
                arrays[k] = pa.array([{"bytes": _png(img), "path": f"frame-{i:06d}.png"} for i, img in enumerate(v)],
                                     type=pa.struct([("bytes", pa.binary()), ("path", pa.string())]))
                ep_stats[k] = image_stats(v)
            else:
                v = v.astype(f["dtype"])
                arrays[k] = pa.array(v) if v.ndim == 1 else pa.FixedSizeListArray.from_arrays(pa.array(v.reshape(-1)), v.shape[1])
                ep_stats[k] = numeric_stats(v)
        return self._append(pa.table(arrays), task, ep_stats)

    def add_table(self, table: pa.Table, task: str, stats: dict) -> int:
        """Append one episode already in this format (another dataset's rows, images still PNG
        bytes) with its per-episode statistics {feature: {stat: value}}: merging datasets this way
        decodes and re-encodes nothing. The index columns are renumbered for this dataset."""
        missing = [k for k in self.features if k not in DEFAULT_FEATURES and (k not in table.column_names or k not in stats)]
        if missing:
            raise DatasetError(f"episode table or its statistics lack features {missing}")
        cols = self._index_columns(len(table), len(self.episodes), self.num_frames, task)
        arrays = {k: pa.array(cols[k]) if k in cols else table[k].combine_chunks() for k in self.features}
        ep_stats = {k: numeric_stats(cols[k]) if k in cols else stats[k] for k in self.features}
        return self._append(pa.table(arrays), task, ep_stats)

    def _index_columns(self, length: int, ep: int, start: int, task: str) -> dict:
        if task not in self.tasks:
            self.tasks.append(task)
        return {
            "timestamp": np.arange(length, dtype=np.float32) / self.fps,
            "frame_index": np.arange(length, dtype=np.int64),
            "episode_index": np.full(length, ep, np.int64),
            "index": np.arange(start, start + length, dtype=np.int64),
            "task_index": np.full(length, self.tasks.index(task), np.int64),
        }

    def _append(self, table: pa.Table, task: str, ep_stats: dict) -> int:
        ep, start, length = len(self.episodes), self.num_frames, len(table)
        chunk, file = divmod(ep, CHUNKS_SIZE)
        _write_table(self.root / DATA_PATH.format(chunk_index=chunk, file_index=file), table)
        row = {"episode_index": ep, "tasks": [task], "length": length, "data/chunk_index": chunk, "data/file_index": file,
               "dataset_from_index": start, "dataset_to_index": start + length,
               "meta/episodes/chunk_index": 0, "meta/episodes/file_index": 0}
        row.update({f"stats/{k}/{s}": v for k, st in ep_stats.items() for s, v in st.items()})
        self.episodes.append(row)
        self._write_meta()
        return ep

    def _write_meta(self) -> None:
        meta = self.root / "meta"
        meta.mkdir(parents=True, exist_ok=True)
        _write_table(self.root / "meta" / "tasks.parquet", tasks_table(self.tasks))
        # pooled from the per-episode statistics in the episodes table (a few numbers per episode),
        # where recomputing over every frame after every episode grew with all frames collected
        stats = {k: aggregate_stats([{s: e[f"stats/{k}/{s}"] for s in STAT_NAMES} for e in self.episodes])
                 for k in (*self.numeric_keys, *self.image_keys)} if self.episodes else {}
        _atomic_write(meta / "stats.json", json.dumps(stats, indent=2).encode())
        info = {
            "codebase_version": CODEBASE_VERSION, "robot_type": self.robot_type,
            "total_episodes": len(self.episodes), "total_frames": self.num_frames, "total_tasks": len(self.tasks),
            "chunks_size": CHUNKS_SIZE, "data_files_size_in_mb": 100, "video_files_size_in_mb": 200,
            "fps": self.fps, "splits": {"train": f"0:{len(self.episodes)}"},
            "data_path": DATA_PATH, "video_path": None, "features": self.features, "vla": self.recording,
        }
        # episodes table before info.json: info.json is what marks the episode as complete
        _write_table(self.root / EPISODES_PATH, pa.Table.from_pylist(self.episodes))
        _atomic_write(meta / "info.json", json.dumps(info, indent=2).encode())


def column_to_numpy(col: pa.ChunkedArray) -> np.ndarray:
    """A parquet column as numpy: [N] for scalars, [N, D] for (fixed-size) list columns."""
    col = col.combine_chunks()
    if pa.types.is_fixed_size_list(col.type) or pa.types.is_list(col.type):
        return col.flatten().to_numpy(zero_copy_only=False).reshape(len(col), -1)
    return col.to_numpy(zero_copy_only=False)


def _png(img: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.asarray(img, np.uint8)).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def tasks_table(tasks: list[str]) -> pa.Table:
    """meta/tasks.parquet as LeRobot writes it through pandas: a DataFrame indexed by the task
    string with a task_index column. LeRobot reads a frame's task as `tasks.iloc[task_index].name`,
    so the string must be the pandas index (recorded in the file's pandas metadata)."""
    table = pa.table({"task_index": pa.array(range(len(tasks)), pa.int64()), "task": pa.array(tasks, pa.string())})
    pandas_meta = {
        "index_columns": ["task"],
        "column_indexes": [{"name": None, "field_name": None, "pandas_type": "unicode", "numpy_type": "object",
                            "metadata": {"encoding": "UTF-8"}}],
        "columns": [{"name": "task_index", "field_name": "task_index", "pandas_type": "int64", "numpy_type": "int64",
                     "metadata": None},
                    {"name": "task", "field_name": "task", "pandas_type": "unicode", "numpy_type": "object",
                     "metadata": None}],
        "creator": {"library": "pyarrow", "version": pa.__version__}, "pandas_version": "2.2.3",
    }
    return table.replace_schema_metadata({"pandas": json.dumps(pandas_meta)})


def read_tasks(root: Path) -> list[str]:
    """Task strings in task_index order; accepts LeRobot's unnamed-index variant of the file."""
    path = Path(root) / "meta" / "tasks.parquet"
    with reading(path):
        t = pq.read_table(path)
        text_col = next((c for c in t.column_names if c != "task_index" and pa.types.is_string(t[c].type)), None)
        if "task_index" not in t.column_names or text_col is None or t["task_index"].null_count:
            raise DatasetError(f"{path} needs a task_index column (no missing values) and a task string column")
        order = np.argsort(t["task_index"].to_numpy())
        return [t[text_col][int(i)].as_py() for i in order]

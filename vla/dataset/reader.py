"""Training samples from a LeRobotDataset v3.0 folder (ours from vla.collect, or the Hub's).

sample = {"images": {camera: uint8[H, W, 3]}, "state": float32[S], "action": float32[H, A],
          "action_is_pad": bool[H], "task": str, "episode_index": int, "frame_index": int}
Action chunks follow LeRobot's delta_timestamps rule: steps past the episode end repeat the last
action and are flagged in action_is_pad.
"""

from __future__ import annotations

import io
import json
import math
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from envs.robot_state import grasps_before_each_step

from .format import DATA_PATH, VIDEO_PATH, DatasetError, column_to_numpy, read_tasks, reading

IMAGE_PREFIX = "observation.images."
GRASPS_KEY = "observation.grasps"  # optional: a dataset without it derives the count from its actions


def load_info(root: str | Path) -> dict:
    """meta/info.json of a v3.0 dataset, checked for what training needs; DatasetError otherwise."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"dataset folder not found: {root}")
    path = root / "meta" / "info.json"
    if not path.is_file():
        raise DatasetError(f"{root} is not a LeRobot dataset: meta/info.json is missing")
    try:
        info = json.loads(path.read_text())
    except ValueError as e:  # JSONDecodeError, or UnicodeDecodeError for bytes that are not UTF-8
        raise DatasetError(f"{path} is not valid JSON: {e}") from None
    # the reader indexes into these without further checks, so a damaged file stops here
    if not isinstance(info, dict) or not isinstance(info.get("features", {}), dict):
        raise DatasetError(f"{path}: expected a JSON object with a 'features' object")
    version = str(info.get("codebase_version", "?"))
    if not version.startswith("v3"):
        raise DatasetError(f"{root} is LeRobot format {version}; this reader needs v3.0 (convert it with lerobot's v2.1->v3.0 script)")
    fps, total = info.get("fps"), info.get("total_frames")
    if not (isinstance(fps, (int, float)) and 0 < fps < math.inf) or not (isinstance(total, int) and total >= 0):
        raise DatasetError(f"{path}: 'fps' must be a positive number and 'total_frames' a count, got {fps!r} and {total!r}")
    feats = info.get("features", {})
    for key in ("action", "observation.state"):
        if key not in feats:
            raise DatasetError(f"{path}: feature {key!r} is missing (features: {sorted(feats)})")
        shape = feats[key].get("shape") if isinstance(feats[key], dict) else None
        if not isinstance(shape, list) or len(shape) != 1:
            raise DatasetError(f"{path}: feature {key!r} must be a vector, has shape {shape!r}")
    cameras = [k for k in feats if k.startswith(IMAGE_PREFIX)]
    if not cameras:
        raise DatasetError(f"{path}: no camera features ({IMAGE_PREFIX}<camera>)")
    for k in cameras:
        if not isinstance(feats[k], dict) or feats[k].get("dtype") not in ("image", "video"):
            raise DatasetError(f"{path}: camera feature {k!r} needs dtype 'image' or 'video', got {feats[k]!r:.100}")
    return info


class LeRobotDataset:
    """Frames of a v3.0 dataset with action chunks of `action_horizon` steps.

    cameras: which `observation.images.<camera>` to return (default: all, in info.json order).
    """

    def __init__(self, root: str | Path, action_horizon: int = 1, cameras: list[str] | None = None):
        self.root = Path(root)
        self.info = load_info(self.root)
        feats = self.info["features"]
        available = [k[len(IMAGE_PREFIX):] for k in feats if k.startswith(IMAGE_PREFIX)]
        self.cameras = list(cameras) if cameras is not None else available
        unknown = [c for c in self.cameras if c not in available]
        if unknown:
            raise DatasetError(f"{self.root}: camera(s) {unknown} not in the dataset (it has {available})")
        if action_horizon < 1:
            raise ValueError(f"action_horizon must be >= 1, got {action_horizon}")
        self.action_horizon = action_horizon
        self.fps = int(self.info["fps"])
        self.tasks = read_tasks(self.root)
        episode_files = sorted((self.root / "meta" / "episodes").rglob("*.parquet"))
        if not episode_files:
            raise DatasetError(f"{self.root}: meta/episodes/ has no parquet files")
        need = ["episode_index", "data/chunk_index", "data/file_index", "dataset_from_index", "dataset_to_index"]
        need += [f"videos/{IMAGE_PREFIX}{c}/{k}" for c in self.cameras if feats[IMAGE_PREFIX + c]["dtype"] == "video"
                 for k in ("chunk_index", "file_index", "from_timestamp", "to_timestamp")]
        self.episodes = []
        for f in episode_files:
            with reading(f):
                rows = pq.read_table(f, columns=[c for c in pq.read_schema(f).names if not c.startswith("stats/")]).to_pylist()
            for row in rows:  # a damaged file can still parse, with nulls or columns gone
                bad = [k for k in need if not isinstance(row.get(k), (int, float) if k.endswith("timestamp") else int)]
                if bad:
                    raise DatasetError(f"{f}: episode row without valid {bad}")
            self.episodes += rows
        if not self.episodes:
            raise DatasetError(f"{self.root}: meta/episodes/ lists no episodes")
        self.episodes.sort(key=lambda e: e["episode_index"])
        self._load_frames(feats)

    def _load_frames(self, feats: dict) -> None:
        files = sorted({(e["data/chunk_index"], e["data/file_index"]) for e in self.episodes})
        numeric = ["action", "observation.state", "episode_index", "frame_index", "index", "task_index"]
        if GRASPS_KEY in feats:  # recorded where the commands that ran are not the actions (DAgger's labels)
            numeric.append(GRASPS_KEY)
        # PNG bytes per camera, as Python bytes taken file by file: the Arrow tables are not kept
        # (holding both doubled the dataset's memory: 2.2 GB more for LIBERO-Goal's 59k frames)
        self._image_bytes = {c: [] for c in self.cameras if feats[IMAGE_PREFIX + c]["dtype"] == "image"}
        cols = {k: [] for k in numeric}
        self._data_files, sources = [], []  # which data file each row came from, for error messages
        for chunk, file in files:
            path = self.root / DATA_PATH.format(chunk_index=chunk, file_index=file)
            if not path.is_file():
                raise DatasetError(f"data file missing: {path}")
            with reading(path):
                table = pq.read_table(path)
                for k in [*numeric, *(IMAGE_PREFIX + c for c in self._image_bytes)]:
                    if k not in table.column_names:
                        raise DatasetError(f"{path}: column {k!r} is missing")
                    if table[k].null_count:
                        raise DatasetError(f"{path}: column {k!r} has missing values")
                for k in numeric:
                    cols[k].append(column_to_numpy(table[k]))
                for c in self._image_bytes:
                    cols_c = table[IMAGE_PREFIX + c].combine_chunks()
                    if not pa.types.is_struct(cols_c.type) or cols_c.type.get_field_index("bytes") < 0:
                        raise DatasetError(f"{path}: column {IMAGE_PREFIX + c!r} has no image bytes (type {cols_c.type})")
                    self._image_bytes[c] += cols_c.field("bytes").to_pylist()
            sources.append(np.full(len(table), len(self._data_files)))
            self._data_files.append(path)
        arrays = {k: np.concatenate(v) for k, v in cols.items()}
        order = np.argsort(arrays["index"], kind="stable")
        self.actions = arrays["action"][order].astype(np.float32).reshape(len(order), -1)
        self.states = arrays["observation.state"][order].astype(np.float32).reshape(len(order), -1)
        for key, arr in (("action", self.actions), ("observation.state", self.states)):
            want = tuple(feats[key]["shape"])
            if arr.shape[1:] != want:
                raise DatasetError(f"{self.root}: {key} has shape {arr.shape[1:]} per frame, info.json says {want}")
        self.episode_index = arrays["episode_index"][order].astype(np.int64)
        self.frame_index = arrays["frame_index"][order].astype(np.int64)
        self.task_index = arrays["task_index"][order].astype(np.int64)
        self._image_order = order
        self._image_source = np.concatenate(sources)
        if len(self.actions) != self.info["total_frames"]:
            raise DatasetError(f"{self.root}: {len(self.actions)} frames in data/, info.json says {self.info['total_frames']}")
        ends = {e["episode_index"]: (e["dataset_from_index"], e["dataset_to_index"]) for e in self.episodes}
        unknown = set(self.episode_index.tolist()) - set(ends)
        if unknown:
            raise DatasetError(f"{self.root}: frames in data/ belong to episodes {sorted(unknown)[:5]} that meta/episodes/ does not list")
        self._ep_bounds = np.array([ends[int(e)] for e in self.episode_index]).reshape(-1, 2)
        # action chunks index frames by position: each frame must lie inside its episode's bounds
        pos = np.arange(len(self))
        if not np.all((self._ep_bounds[:, 0] <= pos) & (pos < self._ep_bounds[:, 1]) & (self._ep_bounds[:, 1] <= len(self))):
            raise DatasetError(f"{self.root}: dataset_from_index/dataset_to_index in meta/episodes/ do not match the frames in data/")
        # the grasp-release cycles completed before each frame (what LiberoEnv's obs["grasps"]
        # reported there): recorded, or from the episode's own gripper commands (the last action number)
        if GRASPS_KEY in arrays:
            self.grasps = arrays[GRASPS_KEY][order].astype(np.int64).reshape(-1)
        else:
            self.grasps = np.zeros(len(self.actions), np.int64)
            for start, end in {tuple(b) for b in self._ep_bounds.tolist()}:
                self.grasps[start:end] = grasps_before_each_step(self.actions[start:end, -1])
        if np.any((self.task_index < 0) | (self.task_index >= len(self.tasks))):
            raise DatasetError(f"{self.root}: task_index in data/ outside the {len(self.tasks)} tasks of meta/tasks.parquet")
        self._video_cache: dict = {}
        self._kept: dict | None = None  # keep_images: (camera, frame) -> resized image

    def __len__(self) -> int:
        return len(self.actions)

    def keep_images(self, size: int, max_bytes: int) -> None:
        """From now on return images resized to size x size (as the policy's camera_images does)
        and keep them in memory, up to max_bytes for all: training reads every frame once per
        epoch, and decoding its PNG was half of the data loading time."""
        self._kept, self._kept_size, self._kept_room = {}, int(size), int(max_bytes)

    def _image(self, camera: str, i: int) -> np.ndarray:
        if self._kept is None:
            return self._decoded(camera, i)
        img = self._kept.get((camera, i))
        if img is None:
            from policies.transforms import resize_square

            img = resize_square(self._decoded(camera, i), self._kept_size)
            if img.nbytes <= self._kept_room:
                self._kept[(camera, i)], self._kept_room = img, self._kept_room - img.nbytes
        return img

    def _decoded(self, camera: str, i: int) -> np.ndarray:
        if camera in self._image_bytes:
            row = self._image_order[i]
            try:
                return np.asarray(Image.open(io.BytesIO(self._image_bytes[camera][row])).convert("RGB"))
            except Exception as e:  # PIL raises OSError, SyntaxError, ValueError, ... for damaged bytes
                path = self._data_files[self._image_source[row]]
                raise DatasetError(f"{path}: frame {i} of camera {camera!r} is not a readable image ({type(e).__name__}: {e})") from None
        return self._video_frame(camera, i)

    def _video_frame(self, camera: str, i: int) -> np.ndarray:
        """Frame i of a dtype "video" camera, decoding (and caching) its episode's segment."""
        import av

        ep = int(self.episode_index[i])
        key = IMAGE_PREFIX + camera
        if (camera, ep) not in self._video_cache:
            row = next(e for e in self.episodes if e["episode_index"] == ep)
            path = self.root / VIDEO_PATH.format(video_key=key, chunk_index=row[f"videos/{key}/chunk_index"],
                                                 file_index=row[f"videos/{key}/file_index"])
            if not path.is_file():
                raise DatasetError(f"video file missing: {path}")
            t0, t1 = row[f"videos/{key}/from_timestamp"], row[f"videos/{key}/to_timestamp"]
            with av.open(str(path)) as container:
                frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)
                          if t0 - 1e-4 <= f.time < t1 - 1e-4]
            self._video_cache = {(camera, ep): frames}  # one episode at a time: training reads in order
        frames = self._video_cache[(camera, ep)]
        return frames[min(int(self.frame_index[i]), len(frames) - 1)]

    def __getitem__(self, i: int) -> dict:
        if not -len(self) <= i < len(self):
            raise IndexError(f"frame {i} out of range (dataset has {len(self)} frames)")
        i = int(i) % len(self)
        start, end = self._ep_bounds[i]
        steps = i + np.arange(self.action_horizon)
        pad = steps >= end
        return {
            "images": {c: self._image(c, i) for c in self.cameras},
            "state": self.states[i],
            "grasps": int(self.grasps[i]),
            "action": self.actions[np.minimum(steps, end - 1)],
            "action_is_pad": pad,
            "task": self.tasks[int(self.task_index[i])],
            "episode_index": int(self.episode_index[i]),
            "frame_index": int(self.frame_index[i]),
        }

    def episode_frames(self, episode_index: int) -> dict:
        """All frames of one episode: images [T, H, W, 3] per camera, state [T, S], action [T, A]."""
        idx = np.flatnonzero(self.episode_index == episode_index)
        if len(idx) == 0:
            raise ValueError(f"episode {episode_index} not in the dataset")
        return {
            "images": {c: np.stack([self._image(c, int(i)) for i in idx]) for c in self.cameras},
            "state": self.states[idx], "action": self.actions[idx],
        }


class DatasetUnion:
    """Several datasets trained on as one (DAgger's aggregate: the demonstrations plus every
    round's relabelled rollouts). They must share fps, cameras, image size, action and state
    layout and render setting; frames are indexed in order, dataset after dataset."""

    def __init__(self, roots: list, action_horizon: int = 1, cameras: list[str] | None = None):
        if not roots:
            raise DatasetError("train.dataset is an empty list")
        self.parts = [LeRobotDataset(r, action_horizon, cameras) for r in roots]
        first = self.parts[0]
        for p in self.parts[1:]:
            for what, a, b in (("fps", p.fps, first.fps), ("cameras", p.cameras, first.cameras),
                               ("render setting", p.info.get("vla", {}).get("render_quality"),
                                first.info.get("vla", {}).get("render_quality")),
                               *((f"feature {k}", p.info["features"].get(k, {}).get("shape"), first.info["features"][k]["shape"])
                                 for k in first.info["features"]
                                 if k == "action" or (k.startswith("observation.") and k != GRASPS_KEY))):
                if a != b:
                    raise DatasetError(f"{p.root} cannot be trained on with {first.root}: {what} {a} vs {b}")
        self.root, self.info, self.cameras = first.root, first.info, first.cameras
        self.tasks = list(dict.fromkeys(t for p in self.parts for t in p.tasks))
        self.episodes = [e for p in self.parts for e in p.episodes]
        self.actions = np.concatenate([p.actions for p in self.parts])
        self.states = np.concatenate([p.states for p in self.parts])
        self.grasps = np.concatenate([p.grasps for p in self.parts])
        self._starts = np.cumsum([0] + [len(p) for p in self.parts])

    def __len__(self) -> int:
        return int(self._starts[-1])

    def keep_images(self, size: int, max_bytes: int) -> None:
        for p in self.parts:  # the room shared by frame count
            p.keep_images(size, max_bytes * len(p) // max(1, len(self)))

    def __getitem__(self, i: int) -> dict:
        if not -len(self) <= i < len(self):
            raise IndexError(f"frame {i} out of range (datasets have {len(self)} frames)")
        i = int(i) % len(self)
        k = int(np.searchsorted(self._starts, i, side="right")) - 1
        return self.parts[k][i - int(self._starts[k])]


def open_dataset(root, action_horizon: int = 1, cameras: list[str] | None = None):
    """One dataset folder, or a list of them trained on as one (DatasetUnion)."""
    if isinstance(root, (list, tuple)):
        if len(root) == 1:
            return LeRobotDataset(root[0], action_horizon, cameras)
        return DatasetUnion(list(root), action_horizon, cameras)
    return LeRobotDataset(root, action_horizon, cameras)

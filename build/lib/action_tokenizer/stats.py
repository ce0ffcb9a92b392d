"""Per-dimension action statistics and the q01/q99 normalisation OpenVLA uses (BOUNDS_Q99)."""

from __future__ import annotations

import json
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np

_ARRAY_FIELDS = ("q01", "q99", "mean", "std", "min", "max")


def check_actions(actions, dim: int | None = None, name: str = "actions") -> np.ndarray:
    """Return `actions` as a float array [..., D]; raise ValueError naming what is wrong."""
    arr = np.asarray(actions)
    if arr.ndim == 0:
        raise ValueError(f"{name} must have at least one dimension [..., D], got a scalar")
    if not np.issubdtype(arr.dtype, np.number) or np.issubdtype(arr.dtype, np.complexfloating):
        raise ValueError(f"{name} must be real numbers, got dtype {arr.dtype}")
    if dim is not None and arr.shape[-1] != dim:
        raise ValueError(f"{name} last dimension is {arr.shape[-1]}, expected {dim} (shape {arr.shape})")
    if not np.all(np.isfinite(arr)):
        bad = np.argwhere(~np.isfinite(arr))[0]
        raise ValueError(f"{name} contain NaN or inf (first at index {tuple(int(i) for i in bad)})")
    return arr


@dataclass(frozen=True)
class ActionStats:
    """Statistics of an action dataset, one value per action dimension.

    `mask[d]` False means dimension d (by convention the gripper) is not normalised.
    Arrays are float32, like the statistics OpenVLA and LeRobot store.
    """

    q01: np.ndarray
    q99: np.ndarray
    mean: np.ndarray
    std: np.ndarray
    min: np.ndarray
    max: np.ndarray
    mask: np.ndarray

    def __post_init__(self):
        dim = None
        for f in fields(self):
            arr = np.asarray(getattr(self, f.name), dtype=bool if f.name == "mask" else np.float32)
            if arr.ndim != 1:
                raise ValueError(f"ActionStats.{f.name} must be 1-D, got shape {arr.shape}")
            if dim is None:
                dim = arr.shape[0]
            elif arr.shape[0] != dim:
                raise ValueError(f"ActionStats.{f.name} has {arr.shape[0]} values, expected {dim}")
            if f.name != "mask" and not np.all(np.isfinite(arr)):
                raise ValueError(f"ActionStats.{f.name} contains NaN or inf")
            arr.flags.writeable = False
            object.__setattr__(self, f.name, arr)

    @property
    def dim(self) -> int:
        return int(self.q01.shape[0])

    @classmethod
    def from_actions(cls, actions, mask=None) -> "ActionStats":
        """Compute statistics of `actions` [N, D] (any leading shape is flattened)."""
        arr = check_actions(actions).astype(np.float32, copy=False)
        arr = arr.reshape(-1, arr.shape[-1])
        if arr.shape[0] == 0:
            raise ValueError("actions is empty: cannot compute statistics of zero actions")
        mask = np.ones(arr.shape[-1], bool) if mask is None else np.asarray(mask, bool)
        if mask.shape != (arr.shape[-1],):
            raise ValueError(f"mask has shape {mask.shape}, expected ({arr.shape[-1]},)")
        return cls(
            q01=np.quantile(arr, 0.01, axis=0),
            q99=np.quantile(arr, 0.99, axis=0),
            mean=arr.mean(axis=0),
            std=arr.std(axis=0),
            min=arr.min(axis=0),
            max=arr.max(axis=0),
            mask=mask,
        )

    # -- normalisation -------------------------------------------------------------------
    def normalize(self, actions) -> np.ndarray:
        """Map to [-1, 1] with q01/q99; masked-out dimensions pass through; q01 == q99 maps to 0."""
        a = check_actions(actions, self.dim).astype(np.float32, copy=False)
        lo, hi = self.q01, self.q99
        # 2 * (a - lo) / (hi - lo + 1e-8) - 1, clipped: in place, in OpenVLA's order of operations
        x = np.subtract(a, lo)
        x *= 2
        x /= hi - lo + np.float32(1e-8)
        x -= 1
        np.clip(x, -1, 1, out=x)
        x[..., self.mask & (lo == hi)] = 0
        x[..., ~self.mask] = a[..., ~self.mask]
        return x

    def unnormalize(self, normalized) -> np.ndarray:
        x = check_actions(normalized, self.dim, "normalized actions").astype(np.float32, copy=False)
        lo, hi = self.q01, self.q99
        return np.where(self.mask, 0.5 * (x + 1) * (hi - lo) + lo, x).astype(np.float32, copy=False)

    # -- serialisation -------------------------------------------------------------------
    def to_dict(self) -> dict:
        out = {k: [float(v) for v in getattr(self, k)] for k in _ARRAY_FIELDS}
        out["mask"] = [bool(v) for v in self.mask]
        return out

    @classmethod
    def from_dict(cls, d: dict) -> "ActionStats":
        missing = [k for k in (*_ARRAY_FIELDS, "mask") if k not in d]
        if missing:
            raise ValueError(f"action stats are missing keys {missing}")
        return cls(**{k: np.asarray(d[k]) for k in (*_ARRAY_FIELDS, "mask")})

    def to_json(self, path: str | Path | None = None) -> str:
        text = json.dumps(self.to_dict(), indent=2)
        if path is not None:
            Path(path).write_text(text)
        return text

    @classmethod
    def from_json(cls, source: str | Path) -> "ActionStats":
        """Load from a JSON string or a path to a JSON file."""
        text = str(source)
        if not text.lstrip().startswith("{"):
            path = Path(source)
            if not path.is_file():
                raise ValueError(f"action stats file not found: {path}")
            text = path.read_text()
        try:
            return cls.from_dict(json.loads(text))
        except json.JSONDecodeError as e:
            raise ValueError(f"action stats are not valid JSON: {e}") from None

    def __eq__(self, other) -> bool:
        return isinstance(other, ActionStats) and all(
            np.array_equal(getattr(self, f.name), getattr(other, f.name)) for f in fields(self)
        )

    __hash__ = None

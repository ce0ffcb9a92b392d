"""Top-down grasps found by search over an object's collision boxes, for shapes the fixed rules
of the pick skill do not fit: a moka pot is wider than the open hand across its narrow axis and
closed on top (no wall to take), but its body between handle and spout fits across the other way.
"""

from __future__ import annotations

import numpy as np

from . import ground_truth as gt
from .skills import closing_direction

OPEN_WIDTH = 0.08  # the Panda's fingers open ~8 cm apart
FINGER = 0.045  # grip site to each open fingertip, along the closing direction
MARGIN = 0.01  # room left between the material and each open finger (tracking is good to ~1 cm)


def search_top_grasp(env, obj: str, yaws: int = 12, step: float = 0.01,
                     toward: np.ndarray | None = None) -> tuple[np.ndarray, float] | None:
    """(grip-site position, yaw) of a top-down pinch of `obj`, or None when none fits.

    Candidates: grip points on a grid over the object's footprint, `yaws` closing directions, the
    grip 2 cm below the material's top at that point. A candidate holds when the material along
    the closing line is one piece narrower than the open hand with the grip near its middle, and
    both fingers' paths down to the grip (with their width) keep clear of the object's other
    parts. Among those, the one nearest the object's body origin (the least torque on lifting);
    with `toward` (a horizontal direction), the one farthest along it (to 5 mm), closing across it
    (a mug's handle, so that the hand stays out of the microwave the mug goes into)."""
    parts = gt.object_boxes(env, obj)
    o = gt.object_info(env, obj)
    t = np.arange(-0.06, 0.0601, 0.002)  # along the closing line
    grid = [(x, y) for x in np.arange(o.aabb_min[0], o.aabb_max[0] + 1e-9, step)
            for y in np.arange(o.aabb_min[1], o.aabb_max[1] + 1e-9, step)]
    if toward is not None:  # and on every part's centre: a handle's bar is narrower than the grid's step
        grid += [tuple(c) for c in parts.centers[:, :2]]
    tops = {p: top_at(parts, np.array(p), o) for p in grid}  # the same for every closing direction
    best, best_key = None, (np.inf,)
    for yaw in np.linspace(0, np.pi, yaws, endpoint=False):
        across = closing_direction(yaw)
        along = np.array([np.cos(yaw), np.sin(yaw), 0.0])
        for x, y in grid:
            top = tops[(x, y)]
            if top is None:
                continue
            z = top - min(0.02, 0.4 * (top - o.aabb_min[2]))
            line = np.array([x, y, z]) + t[:, None] * across
            solid = parts.distance(line).min(1) == 0
            if not solid[len(t) // 2]:
                continue
            lo, hi = _run_around(solid, len(t) // 2)
            width = (hi - lo) * 0.002
            if width > OPEN_WIDTH - 2 * MARGIN:
                continue
            centre = np.array([x, y, z]) + t[(lo + hi) // 2] * across  # grip at the middle of the piece
            if not _fingers_clear(parts, centre, across, along):
                continue
            if toward is None:
                key = (np.linalg.norm(centre[:2] - o.position[:2]),)
            else:
                key = (-round(float(centre[:2] @ toward[:2]) / 0.005), abs(float(across[:2] @ toward[:2])))
            if key < best_key:
                best, best_key = (centre, float((yaw + np.pi / 2) % np.pi - np.pi / 2)), key
    return best


def top_at(parts: gt.Boxes, xy: np.ndarray, o) -> float | None:
    """Height of the object's highest material above `xy` (None: nothing there)."""
    zs = np.arange(o.aabb_max[2], o.aabb_min[2], -0.003)
    pts = np.c_[np.tile(xy, (len(zs), 1)), zs]
    inside = np.flatnonzero(parts.distance(pts).min(1) == 0)
    return float(zs[inside[0]]) if len(inside) else None


def _run_around(solid: np.ndarray, i: int, gap: int = 8) -> tuple[int, int]:
    """The run of True in `solid` containing index i, as [lo, hi], bridging gaps shorter than
    `gap` samples: the parts of one object leave slits no finger fits into."""
    lo = hi = i
    while True:
        ahead = np.flatnonzero(solid[hi + 1:hi + 1 + gap])
        behind = np.flatnonzero(solid[max(lo - gap, 0):lo][::-1])
        if not len(ahead) and not len(behind):
            return lo, hi
        hi += ahead[-1] + 1 if len(ahead) else 0
        lo -= behind[-1] + 1 if len(behind) else 0


def _fingers_clear(parts: gt.Boxes, grip: np.ndarray, across: np.ndarray, along: np.ndarray) -> bool:
    """Both open fingers (~2 cm wide) can come straight down to the grip without touching the object."""
    pts = [grip + s * FINGER * across + w * along + [0, 0, dz]
           for s in (-1, 1) for w in (-0.01, 0.0, 0.01) for dz in (0.0, 0.02, 0.04, 0.06)]
    return bool(parts.distance(np.array(pts)).min() > MARGIN)

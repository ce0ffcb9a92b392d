"""Clearing the way: an object the goal does not mention (a milk carton 3 cm beside a cream
cheese box) can stand where the open fingers must go down to grasp what the goal does mention.
A person would move it aside first; so does the expert: picked and set down on a free spot of
the table, farther from the object to grasp."""

from __future__ import annotations

import numpy as np

from . import ground_truth as gt
from .libero_env import LiberoEnv
from .object_skills import PickPlace
from .skills import clearance

BLOCKED = 0.003  # room (m) below which the open fingers would land on a neighbour
FREE = 0.015  # room the grasp must have once the neighbour is gone
SPOT_ROOM = 0.05  # the spot's distance to everything else, from the moved object's outline


def _grasp_room(step: PickPlace, exclude: tuple[str, ...]) -> float:
    """The best room any of `step`'s grasp options has, with `exclude` (and the object) ignored."""
    o = gt.object_info(step.env, step.obj)
    boxes = gt.obstacle_boxes(step.env, exclude=(step.obj, *exclude))
    boxes = boxes[boxes.extent_along([0, 0, 1]) > o.aabb_min[2] + 0.005]  # not what it stands on
    return max(clearance(g, yaw, boxes) for g, yaw in step._grasp_candidates())


def blocking_object(step: PickPlace, keep: set[str]) -> str | None:
    """The one movable object, not in `keep` (what the goal names), without which `step`'s
    grasp would have room; None when the grasp has room already or no single object blocks it."""
    env = step.env
    step.entry = step._entry(gt.obstacle_boxes(env, exclude=(step.obj,)))  # decides the grasp options
    if _grasp_room(step, ()) >= BLOCKED:
        return None
    here = gt.object_info(env, step.obj).center[:2]
    near = sorted((float(np.linalg.norm(gt.object_info(env, n).center[:2] - here)), n)
                  for n in gt.object_names(env) if n != step.obj and n not in keep)
    for dist, name in near:
        if dist < 0.2 and _grasp_room(step, (name,)) >= FREE:
            return name
    return None


def free_spot(env: LiberoEnv, obj: str, away_from: str) -> np.ndarray | None:
    """A point of the table for `obj` (xy of its centre), as near as possible to where it stands,
    SPOT_ROOM clear of everything, on the side away from `away_from`, within the arm's easy reach
    (0.4 to 0.7 m from the robot's base)."""
    o = gt.object_info(env, obj)
    boxes = gt.obstacle_boxes(env, exclude=(obj,))
    boxes = boxes[boxes.extent_along([0, 0, 1]) > o.aabb_min[2] + 0.005]
    base = gt.body_position(env, "robot0_base")[:2]
    away = o.center[:2] - gt.object_info(env, away_from).center[:2]
    away /= max(np.linalg.norm(away), 1e-6)
    half = 0.5 * o.size[:2]
    outline = np.array([[x, y, z] for x in (-half[0], 0, half[0]) for y in (-half[1], 0, half[1])
                        for z in (o.aabb_min[2] + 0.01, o.aabb_max[2])]) - [0, 0, o.center[2]]
    for dist in np.arange(0.08, 0.26, 0.02):
        for turn in np.radians([0, 30, -30, 60, -60, 90, -90]):
            c, s = np.cos(turn), np.sin(turn)
            xy = o.center[:2] + dist * np.array([c * away[0] - s * away[1], s * away[0] + c * away[1]])
            if not 0.4 < np.linalg.norm(xy - base) < 0.7:
                continue
            pts = outline + [*xy, o.center[2]]
            if not len(boxes.centers) or boxes.distance(pts).min() > SPOT_ROOM:
                return xy
    return None


class SetAside(PickPlace):
    """Pick `obj` and set it down on the table at `spot` (xy of its centre)."""

    def __init__(self, env: LiberoEnv, obj: str, spot: np.ndarray, gain: float = 20.0):
        super().__init__(env, obj, target="", gain=gain)
        self.spot = np.asarray(spot, float)
        self.table_z = float(gt.object_info(env, obj).aabb_min[2])

    def goal_holds(self) -> bool:
        return bool(np.linalg.norm(gt.object_info(self.env, self.obj).center[:2] - self.spot) < 0.03)

    def _target_info(self) -> tuple[np.ndarray, float]:
        # the place aims the object's body origin: the spot is where its centre goes
        o = gt.object_info(self.env, self.obj)
        return self.spot + (o.position[:2] - o.center[:2]), self.table_z

    def _free_spot(self) -> np.ndarray:
        return np.zeros(2)

    def _entry(self, boxes: gt.Boxes) -> None:
        return None

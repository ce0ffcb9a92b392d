"""Pushing a flat object (too low to grasp) across the table into a region."""

from __future__ import annotations

import numpy as np

from . import ground_truth as gt
from .libero_env import LiberoEnv
from .skills import CLOSE, OPEN, Phase, Skill, lean, rot_z, safe_height


class Push(Skill):
    """Push a flat object (a plate: too low to grasp by its rim) across the table into a region:
    closed fingers set down behind it, opposite the region, then driven through it along the
    line from object to region, re-aimed every step as the object slides and turns."""

    def __init__(self, env: LiberoEnv, obj: str, region: str, gain: float = 20.0):
        super().__init__(env, gain)
        self.obj, self.region = obj, region

    def reset(self, R_down: np.ndarray | None = None, takeover: bool = False) -> None:
        self.across, self.replans = False, 0
        super().reset(R_down, takeover)

    def act(self, obs=None) -> np.ndarray:
        if self.phase == "push" and self.replans < 2:
            c, u, _ = self._line()
            if (self._eef()[:2] - c) @ u > 0.02 - self.reach:  # the fingers rode over the rim onto it
                self.replans += 1
                self.phases, self.phase_index, self.phase_steps, self._trail = self.plan(), 0, 0, []
        return super().act(obs)

    def on_blocked(self, phase: Phase) -> bool:
        if phase.name not in ("descend", "back", "down") or self.across:
            return False
        self.across = True
        self.phases, self.phase_index = self.plan(), 0
        return True

    def _line(self) -> tuple[np.ndarray, np.ndarray, float]:
        """(object centre xy, unit direction to the region's centre, distance)."""
        c = gt.object_info(self.env, self.obj).center[:2]
        to = gt.site_position(self.env, self.region)[:2] - c
        return c, to / max(np.linalg.norm(to), 1e-6), float(np.linalg.norm(to))

    def _done(self) -> bool:
        # LIBERO's check (the body origin inside the region's box, riding up on something allowed),
        # 1 cm inside the box's edge (4 cm from the centre) so that it still holds once the hand leaves
        o = gt.object_info(self.env, self.obj)
        inside = np.abs(o.position[:2] - gt.site_position(self.env, self.region)[:2]).max() < 0.03
        return bool(inside and self.env.robosuite_env._eval_predicate(["on", self.obj, self.region]))

    def plan(self) -> list[Phase]:
        o = gt.object_info(self.env, self.obj)
        reach = 0.5 * float(np.max(o.size[:2]))  # from the centre to the rim, about
        z = float(o.aabb_min[2]) + 0.007  # fingertips just above the table: below the rim's top, not over it
        c, u, _ = self._line()
        start = np.array([*(c - u * (reach + 0.015)), z])
        # come down over the object's near part, then step back over the rim and down behind it:
        # straight down behind it the fingers would meet what stands close behind (a drawer handle)
        over = np.array([*(c - u * (reach - 0.03)), o.aabb_max[2] + 0.015])
        boxes = gt.obstacle_boxes(self.env, exclude=(self.obj,))
        # the hand's long side (the fingers' closing direction) along the push, so that it sweeps
        # a narrow lane, or across it when that way down was blocked (a cabinet close behind);
        # leaning 30 degrees ahead over the object either way, its body clear of what stands behind
        self.R_goal = lean(u, -np.radians(30)) @ rot_z(np.arctan2(u[1], u[0]) - (0 if self.across else np.pi / 2)) @ self.R_down
        travel_z = safe_height(boxes, self._eef()[:2], over[:2], max(self._eef()[2], z + 0.1), 0.0)

        self.reach = reach

        def pushing():
            c, u, _ = self._line()
            # 6 cm past the near rim, along the line: the hand presses on the rim at full push,
            # re-aimed as it slides
            return np.array([*(c - u * (reach - 0.06)), z])

        if self._done():
            return []
        return [
            Phase("approach", lambda: np.array([over[0], over[1], travel_z]), CLOSE, tol=0.02, max_steps=100),
            Phase("descend", lambda: over, CLOSE, tol=0.01, max_steps=60),
            Phase("back", lambda: np.array([start[0], start[1], over[2]]), CLOSE, tol=0.01, max_steps=30),
            Phase("down", lambda: start, CLOSE, tol=0.01, max_steps=30),
            Phase("push", pushing, CLOSE, reached=self._done, max_steps=150),
            Phase("retreat", lambda: self._eef() + [0, 0, 0.1], OPEN, tol=0.02, max_steps=30),
        ]

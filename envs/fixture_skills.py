"""Skills on articulated fixtures: a stove's knob turned, a drawer pulled open or pushed shut, a
hinged door swung shut."""

from __future__ import annotations

import numpy as np

from . import ground_truth as gt
from .libero_env import LiberoEnv
from .skills import CLOSE, OPEN, Phase, Skill, hand_along, lean, rot_z, safe_height, turn_angle

class TurnKnob(Skill):
    """Turn a fixture's knob (a hinge about a vertical axis, e.g. a stove) on or off: grasp it on
    its axis across its narrow side and turn the hand about the axis."""

    def __init__(self, env: LiberoEnv, obj: str, on: bool, gain: float = 20.0):
        super().__init__(env, gain)
        fixture = env.robosuite_env.get_object(obj)
        self.joint = fixture.joints[0]
        art = fixture.object_properties["articulation"]
        # aim inside the goal range, clear of its edge; "on" ranges are wide, "off" ones a sliver
        lo, hi = (min(art["default_turnon_ranges"]), max(art["default_turnon_ranges"])) if on else \
            (min(art["default_turnoff_ranges"]), max(art["default_turnoff_ranges"]))
        self.goal = lo + 0.3 * (hi - lo) if on else 0.5 * (lo + hi)
        self.on = on

    def _q(self) -> float:
        return gt.joint_info(self.env, self.joint).qpos

    def plan(self) -> list[Phase]:
        j = gt.joint_info(self.env, self.joint)
        top = float(j.boxes.extent_along([0, 0, 1]).max())
        grasp = np.array([j.anchor[0], j.anchor[1], top - 0.015])
        narrow = gt.narrowest_direction(j.boxes.centers[:, :2])  # across the knob's parts
        self.yaw = np.arctan2(narrow[1], narrow[0]) % np.pi - np.pi / 2
        self.R_goal = rot_z(self.yaw) @ self.R_down
        turn = (self.goal - j.qpos) * np.sign(j.axis[2])
        R_turned = rot_z(self.yaw + turn) @ self.R_down
        above = grasp + [0, 0, 0.06]
        reached = (lambda: self._q() >= self.goal) if self.on else (lambda: self._q() <= self.goal)
        return [
            Phase("approach", lambda: above, OPEN, tol=0.01, max_steps=100),
            Phase("descend", lambda: grasp, OPEN, tol=0.008, max_steps=50),
            Phase("close", lambda: grasp, CLOSE, tol=1.0, min_steps=10, max_steps=10),
            Phase("turn", lambda: grasp, CLOSE, rotation=lambda: R_turned, reached=reached, max_steps=60),
            Phase("release", lambda: grasp, OPEN, tol=1.0, min_steps=8, max_steps=8),
            Phase("retreat", lambda: above, OPEN, tol=0.02, max_steps=30),
        ]


class Drawer(Skill):
    """Open or close a drawer (a slide joint under a BDDL region). Open: take its handle from
    the front with the hand turned horizontal, fingers closing vertically, and pull it out.
    Close: the same hand, fingers shut, pushes the handle in; a drawer too low for that hand (a
    bottom drawer) is pushed by the fingers pointing down. Done by the fixture's own check."""

    def __init__(self, env: LiberoEnv, region: str, open: bool, gain: float = 20.0, fit: str | None = None):
        """fit: open only as far as this object needs to go in (its width and 3 cm for the
        fingers): a drawer pulled all the way out hangs over what stands in front of it."""
        super().__init__(env, gain)
        self.opening = None if fit is None else float(np.max(gt.object_info(env, fit).size[:2])) + 0.03
        rs = env.robosuite_env
        site = rs.object_sites_dict[region]
        self.joint = site.joints[0]
        self.fixture = rs.get_object(site.parent_name)
        self.floor = float(gt.object_info(env, site.parent_name).aabb_min[2])  # what the fixture stands on
        art = self.fixture.object_properties["articulation"]
        self.opens_negative = max(art["default_open_ranges"]) < min(art["default_close_ranges"])
        self.open = open

    def _done(self) -> bool:
        q = gt.joint_info(self.env, self.joint).qpos
        if self.open and self.opening is not None:
            return (-q if self.opens_negative else q) >= self.opening - 0.01
        step = 0.01 if self.opens_negative else -0.01  # 1 cm against the opening direction
        # a little past the fixture's own threshold, so the goal check holds when the hand lets go
        return self.fixture.is_open(q + step) if self.open else self.fixture.is_close(q - step)

    def plan(self) -> list[Phase]:
        j = gt.joint_info(self.env, self.joint)
        out = -j.axis if self.opens_negative else j.axis  # the way the drawer slides open
        front = j.boxes.extent_along(out)
        handle = j.boxes.centers[front > front.max() - 0.01].mean(0)  # the parts that stick out most
        self.R_goal = hand_along(self.R_down, -out)
        if self._done():
            return []  # already as wanted (LIBERO starts some drawers open)
        if not self.open and handle[2] - 0.1 < self.floor:
            # a bottom drawer: the hand turned horizontal is 20 cm tall and would meet the table.
            # Pointing down, the closed fingers side by side come down just off its front, 1.5 cm
            # under the front's top edge (lower, the forearm meets the cabinet's base), and push,
            # the hand leaning back 30 degrees (upright, the wrist meets the cabinet above the drawer)
            self.R_goal = lean(-out[:2], np.radians(30)) @ rot_z(self.nearer_equivalent(float(np.arctan2(out[1], out[0])))) @ self.R_down
            top = j.boxes[front > front.max() - 0.03].extent_along([0, 0, 1]).max()
            off = np.array([*(handle + 0.03 * out)[:2], top - 0.015])
            travel_z = safe_height(gt.obstacle_boxes(self.env), self._eef()[:2], off[:2], max(self._eef()[2], off[2] + 0.15), 0.0)
            return [
                Phase("approach", lambda: np.array([off[0], off[1], travel_z]), CLOSE, tol=0.02, max_steps=100),
                Phase("descend", lambda: off, CLOSE, tol=0.01, max_steps=60),
                Phase("push", lambda: handle - 0.25 * out, CLOSE, reached=self._done, max_steps=100),
                Phase("retreat", lambda: self._eef() + [*(0.05 * out[:2]), 0.1], OPEN, tol=0.02, max_steps=30),
            ]
        if not self.open:
            front = handle + 0.10 * out
            # a hand behind the drawer's front (over the drawer, having put something in) would go
            # through the front, turning as it goes: back to the episode's start first, pointing down
            behind, home = (self._eef() - handle) @ out < 0, self.env.start_eef_pos
            over = [Phase("home", lambda: home, CLOSE, rotation=lambda: self.R_down, tol=0.03, max_steps=60)] if behind else []
            # of the two equal grips (a half turn about the pointing axis apart) the one nearer the
            # hand: near a half turn away the turn's direction flips with a few degrees of tilt and
            # the wrist winds the wrong way, lifting the arm out of reach of the handle
            R = self.R_down if behind else self._hand()
            self.R_goal = min((self.R_goal, self.R_goal @ rot_z(np.pi)), key=lambda G: turn_angle(G, R))
            return [
                *over,
                Phase("approach", lambda: front, CLOSE, tol=0.015, max_steps=100),
                Phase("push", lambda: handle - 0.25 * out, CLOSE, reached=self._done, max_steps=100),
                Phase("retreat", lambda: self._eef() + 0.1 * out, OPEN, tol=0.02, min_steps=5, max_steps=20),
            ]
        return [
            Phase("approach", lambda: handle + 0.12 * out, OPEN, tol=0.015, max_steps=100),
            Phase("reach", lambda: handle + 0.005 * out, OPEN, tol=0.008, max_steps=50),
            Phase("close", lambda: handle, CLOSE, tol=1.0, min_steps=10, max_steps=10),
            # as far as needed: to the opening itself, slowing down on the way (it would run on)
            Phase("pull", lambda: handle + (self.opening or 0.16) * out, CLOSE, reached=self._done, max_steps=80),
            Phase("release", lambda: self._eef(), OPEN, tol=1.0, min_steps=8, max_steps=8),
            Phase("retreat", lambda: handle + 0.24 * out, OPEN, tol=0.02, max_steps=20),
        ]


class Door(Skill):
    """Swing a hinged door (a vertical hinge, e.g. a microwave's) shut: the closed fingers come
    down beside the door's face, on the side away from where it must go, 70% of the way out from
    the hinge, and follow the arc the door turns on, a little ahead of it, until the fixture
    reads closed. The hand's long side stays along the door as it turns: across it, one end of
    the 20 cm hand would be over the door (a door opened past 90 degrees) or, near shut, against
    the fixture's front. Opening a hinged door is not built: a closed door shows no
    edge for the fingers (libero_90 task 35, open the microwave, is skipped as unsupported)."""

    def __init__(self, env: LiberoEnv, fixture: str, gain: float = 20.0):
        super().__init__(env, gain)
        self.fixture = env.robosuite_env.get_object(fixture)
        self.joint = self.fixture.joints[0]
        art = self.fixture.object_properties["articulation"]
        self.closes_up = min(art["default_close_ranges"]) > max(art["default_open_ranges"])  # q grows as it shuts

    def _done(self) -> bool:
        return bool(self.fixture.is_close(gt.joint_info(self.env, self.joint).qpos))

    def _angle(self) -> float:
        """The door's direction from its hinge (radians, world, about the vertical)."""
        j = gt.joint_info(self.env, self.joint)
        r = j.boxes.centers[:, :2] - j.anchor[:2]
        out = r[np.argmax(np.linalg.norm(r, axis=1))]
        return float(np.arctan2(out[1], out[0]))

    def _shutting(self) -> float:
        """+1 or -1: the sign of the door's turn (about world z) as it shuts."""
        return float(np.sign(gt.joint_info(self.env, self.joint).axis[2]) * (1 if self.closes_up else -1))

    def _arc(self, ahead: float) -> tuple[np.ndarray, np.ndarray]:
        """(the point 70% out along the door, turned `ahead` radians further shut; the way it moves there)."""
        j = gt.joint_info(self.env, self.joint)
        reach = np.linalg.norm(j.boxes.centers[:, :2] - j.anchor[:2], axis=1).max() + 0.01
        angle = self._angle() + ahead * self._shutting()
        e = np.array([np.cos(angle), np.sin(angle)])
        n = self._shutting() * np.array([-e[1], e[0]])  # direction of travel
        return j.anchor[:2] + 0.7 * reach * e, n

    def _hand_along_door(self) -> np.ndarray:
        """The hand pointing down, its fingers' closing direction along the door as it is now."""
        return rot_z(self.yaw_start + self._angle() - self.angle_start) @ self.R_down

    def plan(self) -> list[Phase]:
        if self._done():
            return []
        j = gt.joint_info(self.env, self.joint)
        top = float(j.boxes.extent_along([0, 0, 1]).max())
        z = float(j.anchor[2])  # the door's middle height
        p, n = self._arc(0.0)
        behind = np.array([*(p - 0.05 * n), z])  # 5 cm off the face, on the side it is pushed from
        # the hand's turn (from R_down) that lays its long side along the door: of the two (the
        # fingers are symmetric), the one that keeps the turn smallest over the whole swing (the
        # wrist's range is ~+-166 degrees about its start), the door turning q radians to shut
        self.angle_start = self._angle()
        swing = -gt.joint_info(self.env, self.joint).qpos * np.sign(j.axis[2])
        starts = [(self.angle_start - np.pi / 2 + k * np.pi + np.pi) % (2 * np.pi) - np.pi for k in (0, 1)]
        self.yaw_start = min(starts, key=lambda y: max(abs(y), abs(y + swing)))
        boxes = gt.obstacle_boxes(self.env)
        travel_z = safe_height(boxes, self._eef()[:2], behind[:2], max(self._eef()[2], top + 0.08), 0.0)

        def along_arc():
            p, _ = self._arc(0.3)
            return np.array([*p, z])

        self.R_goal = self._hand_along_door()
        return [
            Phase("approach", lambda: np.array([behind[0], behind[1], travel_z]), CLOSE, tol=0.02, max_steps=100),
            Phase("descend", lambda: behind, CLOSE, tol=0.015, max_steps=60),
            Phase("swing", along_arc, CLOSE, reached=self._done, max_steps=120, rotation=self._hand_along_door),
            Phase("retreat", lambda: self._eef() + [0, 0, 0.1], OPEN, tol=0.02, max_steps=30,
                  rotation=self._hand_along_door),
        ]

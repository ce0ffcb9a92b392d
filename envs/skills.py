"""The base of the scripted expert's skills: a skill is a sequence of phases (move above a grasp
point, descend, close, lift, carry, lower, release, retreat...), each a moving end-effector target
re-read from the scene every step, followed by a proportional controller on position and
orientation. Actions follow the design: 7 numbers in [-1, 1], gripper -1 open / +1 close.
The skills themselves: envs.object_skills (pick-and-place), envs.push, envs.fixture_skills (knob,
drawer, hinged door).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
from robosuite.utils import transform_utils as T

from . import ground_truth as gt
from .libero_env import LiberoEnv

ROT_SCALE = 0.5  # radians per unit of rotation action
ROBOT_BODIES = ("gripper0_", "robot0_")  # name prefixes of the arm's and the hand's bodies
OPEN, CLOSE = -1.0, 1.0


@dataclass
class Phase:
    name: str
    target: Callable[[], np.ndarray]  # end-effector target position (re-evaluated every step)
    gripper: float
    tol: float = 0.01  # done when within tol (metres) ...
    min_steps: int = 0  # ... and at least this many steps in the phase
    max_steps: int = 80
    rotation: Callable[[], np.ndarray] | None = None  # orientation target; None: the skill's default
    reached: Callable[[], bool] | None = None  # a goal of its own (a joint angle), instead of tol


def rot_z(yaw: float) -> np.ndarray:
    c, s = np.cos(yaw), np.sin(yaw)
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1.0]])


def lean(u: np.ndarray, angle: float) -> np.ndarray:
    """A turn of `angle` radians about the horizontal axis across the horizontal direction `u`:
    applied to a hand pointing down, negative leans its top ahead along u, positive back."""
    return T.quat2mat(T.axisangle2quat(np.array([u[1], -u[0], 0.0]) * angle))


def turn_angle(R_a: np.ndarray, R_b: np.ndarray) -> float:
    """The angle (radians) of the rotation taking orientation R_b to R_a."""
    return float(np.linalg.norm(T.quat2axisangle(T.mat2quat(R_a @ R_b.T))))


# the hand above the fingers, sampled: ~20 cm long along the closing direction, 8-12 cm above the grip site
HAND_SPAN = (-0.1, -0.05, 0.05, 0.1)
HAND_HEIGHTS = (0.08, 0.12)


def closing_direction(yaw: float) -> np.ndarray:
    """The fingers' closing direction (world, horizontal) of the hand pointing down turned `yaw`
    from R_down; yaw 0 closes them along world y."""
    return np.array([-np.sin(yaw), np.cos(yaw), 0.0])


def clearance(grip: np.ndarray, yaw: float, boxes: gt.Boxes, spread: float = 0.045,
              lean_toward: np.ndarray | None = None) -> float:
    """Room around the fingertips (`spread` apart from the grip site: 0.045 open, ~0.01 shut)
    along the path they sweep down to `grip`, and around the hand above them. `lean_toward`: the
    hand's top leans that way (a horizontal vector, its length the sine of the lean)."""
    across = closing_direction(yaw)
    up = np.array([0.0, 0.0, 1.0])
    if lean_toward is not None:
        up = np.array([*lean_toward[:2], np.sqrt(1 - np.dot(lean_toward[:2], lean_toward[:2]))])
    tips = [grip + s * spread * across + [0, 0, dz] for s in (-1, 1) for dz in (0.0, 0.03, 0.06)]
    hand = [grip + s * across + dz * up for s in HAND_SPAN for dz in HAND_HEIGHTS]
    d = boxes.distance(np.array(tips + hand))
    return float(d.min()) if d.size else np.inf


def hand_along(R_down: np.ndarray, approach: np.ndarray, up: bool = True) -> np.ndarray:
    """The hand turned from R_down so that it points along the horizontal `approach`, fingers
    closing vertically. The fingers are symmetric, so there are two such poses, a half turn
    apart about the approach axis; which one the arm reaches without its wrist at a limit
    depends on the height (`up`: the one a drawer pull takes, measured on every LIBERO drawer)."""
    a_l, c_l = R_down.T @ [0, 0, -1.0], R_down.T @ [0, 1.0, 0]
    local = np.stack([a_l, c_l, np.cross(a_l, c_l)], 1)
    c_w = np.array([0, 0, 1.0 if up else -1.0])
    return np.stack([approach, c_w, np.cross(approach, c_w)], 1) @ local.T


class Skill:
    """A sequence of phases, each a moving end-effector target (and gripper command), followed
    with a proportional controller on position and orientation. Subclasses write `plan()`."""

    def __init__(self, env: LiberoEnv, gain: float = 20.0):
        self.env, self.gain = env, gain
        self.phases: list[Phase] = []

    def _eef(self) -> np.ndarray:
        return np.array(self.env.raw_obs["robot0_eef_pos"])

    def _hand(self) -> np.ndarray:
        """The hand's orientation (rotation matrix, world)."""
        return T.quat2mat(self.env.raw_obs["robot0_eef_quat"])

    def _hand_yaw(self) -> tuple[float, bool]:
        """(the hand's turn about the vertical from R_down, whether it points down (within ~25 degrees))."""
        R_rel = self._hand() @ self.R_down.T
        return float(np.arctan2(R_rel[1, 0], R_rel[0, 0])), bool(R_rel[2, 2] >= 0.9)

    def plan(self) -> list[Phase]:
        raise NotImplementedError

    def reset(self, R_down: np.ndarray | None = None, takeover: bool = False) -> None:
        """Plan from the current scene; call after env.reset() (or when the skill's turn comes).
        R_down: the hand pointing down (default: the current pose, as after env.reset()).
        takeover: the scene is wherever another policy left it (object in hand or dropped,
        fingers closed, arm low), not an episode's start: plan from that state."""
        self.R_down = T.quat2mat(self.env.raw_obs["robot0_eef_quat"]) if R_down is None else R_down
        self.R_goal = self.R_down
        self.takeover = takeover
        self.phases = self.plan()
        self.phase_index, self.phase_steps, self._trail = 0, 0, []

    @property
    def phase(self) -> str:
        return self.phases[self.phase_index].name if self.phase_index < len(self.phases) else "done"

    def act(self, obs=None) -> np.ndarray:
        if self.phase_index >= len(self.phases):
            return np.array([0, 0, 0, 0, 0, 0, OPEN], np.float32)
        ph = self.phases[self.phase_index]
        err = ph.target() - self._eef()
        R_goal = ph.rotation() if ph.rotation else self.R_goal
        self.phase_steps += 1
        self._trail.append(self._eef())
        still = len(self._trail) > 10 and np.linalg.norm(self._trail[-1] - self._trail[-11]) < 0.002
        stalled = still and np.linalg.norm(err) < 0.04  # blocked just short of the target (reach, contact)
        if still and np.linalg.norm(err) >= 0.04 and self.on_blocked(ph):  # held up far from the target
            self._trail, self.phase_steps = [], 0
            return self.act(obs)  # the skill planned again
        done = ph.reached() if ph.reached else (np.linalg.norm(err) < ph.tol or stalled)
        if (done and self.phase_steps >= ph.min_steps) or self.phase_steps >= ph.max_steps:
            self._trail = []
            self.on_phase_end(ph)
            self.phase_index += 1
            self.phase_steps = 0
        pos = np.clip(self.gain * err, -1.0, 1.0)
        rot = np.clip(T.quat2axisangle(T.mat2quat(R_goal @ self._hand().T)) / ROT_SCALE, -1.0, 1.0)
        return np.concatenate([pos, rot, [ph.gripper]]).astype(np.float32)

    def nearer_equivalent(self, yaw: float) -> float:
        """`yaw` or the same grasp a half turn round (the fingers are symmetric), whichever the
        hand, pointing down, turns to by less; a half turn is ambiguous (its axis flips from
        step to step). Only within ~10 degrees of a half turn: any other turn is well defined, and kept."""
        hand, down = self._hand_yaw()
        if not down:  # not pointing down: the hand turns anyway
            return yaw
        d = (yaw - hand + np.pi) % (2 * np.pi) - np.pi
        return yaw - np.pi * np.sign(d) if abs(d) > np.pi - 0.2 else yaw

    def on_phase_end(self, phase: Phase) -> None:
        pass

    def on_blocked(self, phase: Phase) -> bool:
        """Something holds the hand up far from the phase's target; True when the skill planned again."""
        return False


def safe_height(boxes: gt.Boxes, start_xy, end_xy, z: float, below: float, yaw: float | None = None,
                footprint=()) -> float:
    """The lowest grip-site height >= z at which the straight path from start to end keeps
    what hangs `below` it and the hand above it 2 cm clear of every obstacle. `yaw`: the hand's
    turn, whose whole length along the closing direction is then checked (a carried object's
    path beside a cabinet: the path's centre line clears it, the hand's end does not).
    `footprint`: xy offsets from the grip of the carried object's outline, whose bottom is
    checked along the path's middle too (a moka pot 7 cm each side of the line swept another pot
    over); not at its ends, where the object stands now and where it goes down into the target
    (a bowl into a drawer the cabinet overhangs)."""
    t = np.linspace(0, 1, 12)[:, None]
    xy = (1 - t) * np.asarray(start_xy) + t * np.asarray(end_xy)
    spans = (0.0,) if yaw is None else (0.0, *HAND_SPAN)
    sides = [s * closing_direction(yaw or 0.0)[:2] for s in spans]
    for height in np.arange(z, 1.4, 0.02):
        pts = [np.c_[xy, np.full(len(xy), height + dz)] for dz in (-below, 0.0, 0.1)]
        pts += [np.c_[xy + side, np.full(len(xy), height + dz)] for side in sides for dz in HAND_HEIGHTS]
        mid = xy[(t[:, 0] > 0.1) & (t[:, 0] < 0.8)]
        pts += [np.c_[mid + np.asarray(o), np.full(len(mid), height - below)] for o in footprint]
        if len(boxes.centers) == 0 or boxes.distance(np.concatenate(pts)).min() > 0.02:
            return float(height)
    return float(z)


class Home(Skill):
    """Back to where the episode started, the hand pointing down: between a skill that turned the
    hand (a drawer's horizontal grip) and the next, whose straight path from there would stretch
    the arm into its elbow limit."""

    def _turned_back(self) -> bool:
        return turn_angle(self.R_goal, self._hand()) < 0.1

    def plan(self) -> list[Phase]:
        here, home = self._eef(), self.env.start_eef_pos
        # down, by the shorter of the two turns (the fingers are symmetric): after a sideways
        # drawer pull the start's pose is a half turn away, a turn whose axis flips from step to
        # step and drives the wrist into its limits
        R = self._hand()
        self.R_goal = min((rot_z(yaw) @ self.R_down for yaw in (0.0, np.pi)), key=lambda G: turn_angle(G, R))
        # turn first, rising on the spot: fingers swinging down in front of a drawer would push
        # it shut, and turning while travelling at full speed strains the wrist too
        up = here + [0, 0, 0.08]
        return [Phase("turn", lambda: up, OPEN, reached=self._turned_back, max_steps=40),
                Phase("home", lambda: home, OPEN, tol=0.03, max_steps=60)]

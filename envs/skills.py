"""The skills a scripted expert chains: pick-and-place, a knob turn, a drawer pull or push.

Each skill plans a sequence of phases (move above the grasp point, descend, close, lift, carry,
lower, release, retreat), re-reading object poses every step, and drives the end effector with a
proportional controller on position and orientation. Actions follow the design: 7 numbers in
[-1, 1], gripper -1 open / +1 close.
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


def _rot_z(yaw: float) -> np.ndarray:
    c, s = np.cos(yaw), np.sin(yaw)
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1.0]])


def _clearance(grip: np.ndarray, yaw: float, boxes: gt.Boxes, spread: float = 0.045) -> float:
    """Room around the fingertips (`spread` apart from the grip site: 0.045 open, ~0.01 shut)
    along the path they sweep down to `grip`, and around the hand above them."""
    across = np.array([-np.sin(yaw), np.cos(yaw), 0.0])  # finger closing direction
    tips = [grip + s * spread * across + [0, 0, dz] for s in (-1, 1) for dz in (0.0, 0.03, 0.06)]
    # the hand above the fingers is ~20 cm long along the closing direction
    hand = [grip + s * across + [0, 0, dz] for s in (-0.1, -0.05, 0.05, 0.1) for dz in (0.08, 0.12)]
    d = boxes.distance(np.array(tips + hand))
    return float(d.min()) if d.size else np.inf


def _hand_along(R_down: np.ndarray, approach: np.ndarray) -> np.ndarray:
    """The hand turned from R_down so that it points along the horizontal `approach`, fingers
    closing vertically. The fingers are symmetric, so of the two such poses (closing up or down)
    the one nearer R_down: the other is a half turn away and winds the wrist into its limits."""
    a_l, c_l = R_down.T @ [0, 0, -1.0], R_down.T @ [0, 1.0, 0]
    local = np.stack([a_l, c_l, np.cross(a_l, c_l)], 1)
    options = []
    for up in (1.0, -1.0):
        c_w = np.array([0, 0, up])
        options.append(np.stack([approach, c_w, np.cross(approach, c_w)], 1) @ local.T)
    return min(options, key=lambda R: np.linalg.norm(T.quat2axisangle(T.mat2quat(R @ R_down.T))))


class Skill:
    """A sequence of phases, each a moving end-effector target (and gripper command), followed
    with a proportional controller on position and orientation. Subclasses write `plan()`."""

    def __init__(self, env: LiberoEnv, gain: float = 20.0):
        self.env, self.gain = env, gain
        self.phases: list[Phase] = []

    def _eef(self) -> np.ndarray:
        return np.array(self.env.raw_obs["robot0_eef_pos"])

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
        stalled = (len(self._trail) > 10 and np.linalg.norm(self._trail[-1] - self._trail[-11]) < 0.002
                   and np.linalg.norm(err) < 0.04)  # blocked just short of the target (reach, contact)
        if (len(self._trail) > 10 and np.linalg.norm(self._trail[-1] - self._trail[-11]) < 0.002
                and np.linalg.norm(err) >= 0.04 and self.on_blocked(ph)):  # held up far from the target
            self._trail, self.phase_steps = [], 0
            return self.act(obs)  # the skill planned again
        done = ph.reached() if ph.reached else (np.linalg.norm(err) < ph.tol or stalled)
        if (done and self.phase_steps >= ph.min_steps) or self.phase_steps >= ph.max_steps:
            self._trail = []
            self.on_phase_end(ph)
            self.phase_index += 1
            self.phase_steps = 0
        pos = np.clip(self.gain * err, -1.0, 1.0)
        R = T.quat2mat(self.env.raw_obs["robot0_eef_quat"])
        rot = np.clip(T.quat2axisangle(T.mat2quat(R_goal @ R.T)) / ROT_SCALE, -1.0, 1.0)
        return np.concatenate([pos, rot, [ph.gripper]]).astype(np.float32)

    def on_phase_end(self, phase: Phase) -> None:
        pass

    def on_blocked(self, phase: Phase) -> bool:
        """Something holds the hand up far from the phase's target; True when the skill planned again."""
        return False


class PickPlace(Skill):
    """Pick `obj` and put it on / in `target` (an object or a BDDL region site)."""

    def __init__(self, env: LiberoEnv, obj: str, target: str, gain: float = 20.0, predicate: str = "on",
                 regrasp_when_blocked: bool = False):
        super().__init__(env, gain)
        self.obj, self.target, self.predicate = obj, target, predicate
        self.regrasp_when_blocked = regrasp_when_blocked

    def reset(self, R_down: np.ndarray | None = None, takeover: bool = False) -> None:
        # regrasps after a missed grasp: how many, which sides missed, the object's height when the fingers closed
        self.replans, self.missed, self.bottom_at_grasp = 0, set(), -np.inf
        super().reset(R_down, takeover)

    def _fingers_around(self) -> bool:
        """The object is between the fingers and they are closed on it: both pads touch it
        (robosuite's check, which misses many bowl grasps just after closing), or the grip site
        lies inside the object's box with the fingers neither open nor shut on nothing."""
        if self._holding():
            return True
        o = gt.object_info(self.env, self.obj)
        grip = self._eef()
        q = np.asarray(self.env.raw_obs["robot0_gripper_qpos"])
        inside = np.all(grip >= o.aabb_min - 0.01) and np.all(grip <= o.aabb_max + 0.01)
        return bool(inside and 0.002 < q[0] - q[1] < 0.07)

    def _holding(self) -> bool:
        """Both finger pads touch the object (robosuite's grasp check)."""
        rs = self.env.robosuite_env
        return bool(rs._check_grasp(rs.robots[0].gripper, rs.objects_dict[self.obj]))

    def _target_info(self) -> tuple[np.ndarray, float]:
        """(xy, top z) of the place target: an object (its body origin), or a BDDL region site."""
        if self.target in self.env.robosuite_env.obj_body_id:
            t = gt.object_info(self.env, self.target)
            return t.position[:2], float(t.aabb_max[2])  # LIBERO's `on` compares body origins (3 cm)
        pos = gt.site_position(self.env, self.target)
        return pos[:2], float(pos[2])

    def _grasp_candidates(self) -> list[tuple[np.ndarray, float]]:
        """(grip-site position, gripper yaw) options. Yaw 0 closes the fingers along world y.

        A wide object (bowl, plate) is taken by its wall: one option per side. A narrow one is
        taken from above across its narrower horizontal axis."""
        o = gt.object_info(self.env, self.obj)
        c, size = o.center, o.size
        z = o.aabb_max[2] - min(0.025, 0.5 * size[2])
        if min(size[0], size[1]) > 0.07:
            rim = 0.5 * min(size[0], size[1]) - 0.012
            # the side facing the robot first: it keeps the arm least stretched when placing
            return [(np.array([c[0] - rim, c[1], z]), np.pi / 2), (np.array([c[0], c[1] - rim, z]), 0.0),
                    (np.array([c[0], c[1] + rim, z]), 0.0), (np.array([c[0] + rim, c[1], z]), np.pi / 2)]
        narrow = gt.narrow_axis(self.env, self.obj)
        # turn the closing direction (world y, angle pi/2) onto the narrow axis; the gripper is
        # symmetric, so the smallest such turn lies in [-pi/2, pi/2)
        yaw = np.arctan2(narrow[1], narrow[0]) % np.pi - np.pi / 2
        return [(np.array([c[0], c[1], z]), float(yaw))]

    def _choose_grasp(self, boxes: gt.Boxes) -> None:
        options = self._grasp_candidates()
        o = gt.object_info(self.env, self.obj)
        # what the object stands on is below every option alike: it must not decide
        boxes = boxes[boxes.extent_along([0, 0, 1]) > o.aabb_min[2] + 0.005]
        # room counts up to 5 cm; among options with that much, the first listed wins
        scores = [min(_clearance(g, yaw, boxes), 0.05) - 0.001 * i for i, (g, yaw) in enumerate(options)]
        if self.takeover:  # a hand already lined up over an option (the learner's approach) keeps it
            eef = self._eef()
            for i, (g, _) in enumerate(options):
                if np.linalg.norm(eef[:2] - g[:2]) < 0.015 and -0.005 < eef[2] - g[2] < 0.09:
                    scores[i] += 1.0
        missed = [i for i in self.missed if i < len(options)]
        if len(missed) < len(options):  # after a missed grasp, another side first
            for i in missed:
                scores[i] = -np.inf
        i = int(np.argmax(scores))
        self.grasp_index, self.grasp_offset, self.yaw = i, options[i][0] - o.center, options[i][1]

    def _grasp_point(self) -> np.ndarray:
        return gt.object_info(self.env, self.obj).center + self.grasp_offset

    def plan(self) -> list[Phase]:
        env = self.env
        # at a takeover: fingers on the object (not after a missed grasp); carried if only the hand touches it
        around = self.takeover and not self.missed and self._fingers_around()
        carried = around and all(b.startswith(ROBOT_BODIES) for b in gt.bodies_touching(env, self.obj))
        if self.takeover and env.robosuite_env._eval_predicate([self.predicate, self.obj, self.target]):
            return []  # taken over after this goal was reached
        boxes = gt.obstacle_boxes(env, exclude=(self.obj,))
        self._choose_grasp(boxes)
        if around:  # grasp where the hand already is, turned as it is
            self.grasp_offset = self._eef() - gt.object_info(env, self.obj).center
            R_rel = T.quat2mat(env.raw_obs["robot0_eef_quat"]) @ self.R_down.T
            self.yaw = float(np.arctan2(R_rel[1, 0], R_rel[0, 0]))
        self.R_goal = _rot_z(self.yaw) @ self.R_down
        grasp = self._grasp_point()
        below_grip = grasp[2] - gt.object_info(env, self.obj).aabb_min[2]  # object bottom below the grip site
        place_xy, target_top = self._target_info()
        carry_z = self._safe_height(boxes, grasp[:2], place_xy, max(grasp[2], target_top + below_grip) + 0.09, below_grip)
        travel_z = self._safe_height(boxes, self._eef()[:2], grasp[:2], max(self._eef()[2], grasp[2] + 0.08), 0.0)

        def over_grasp():
            g = self._grasp_point()
            return np.array([g[0], g[1], travel_z])

        def above_grasp():
            g = self._grasp_point()
            return np.array([g[0], g[1], g[2] + 0.08])

        def at_grasp():
            return self._grasp_point()

        def lifted():
            return np.array([self.grasp_xy[0], self.grasp_xy[1], carry_z])

        def over_target_xy():
            # closed loop on where the held object's origin is: a bowl held by its wall swings
            xy, _ = self._target_info()
            return self._eef()[:2] + xy - gt.object_info(env, self.obj).position[:2]

        def above_place():
            return np.array([*over_target_xy(), carry_z])

        def at_place(clearance=0.01):
            # down until the held object's lowest point (however it hangs) is just above the target
            _, top = self._target_info()
            gap = gt.object_info(env, self.obj).aabb_min[2] - (top + clearance)
            return np.array([*over_target_xy(), self._eef()[2] - gap])

        def retreat():
            p = self._eef()
            return np.array([p[0], p[1], carry_z])

        def here():
            return self._eef()

        self.grasp_xy = grasp[:2]
        phases = [
            Phase("approach", over_grasp, OPEN, tol=0.02, max_steps=100),
            Phase("above", above_grasp, OPEN, tol=0.01, max_steps=40),
            Phase("descend", at_grasp, OPEN, tol=0.01, max_steps=60),
            Phase("close", at_grasp, CLOSE, tol=1.0, min_steps=10, max_steps=10),
            Phase("lift", lifted, CLOSE, tol=0.02, max_steps=60),
            Phase("carry", above_place, CLOSE, tol=0.01, max_steps=100),
            # settle the swing a few cm up, so the last part of the descent is straight down
            Phase("align", lambda: at_place(0.04), CLOSE, tol=0.006, min_steps=5, max_steps=40),
            Phase("lower", at_place, CLOSE, tol=0.015, max_steps=60),
            Phase("release", here, OPEN, tol=1.0, min_steps=8, max_steps=8),
            Phase("retreat", retreat, OPEN, tol=0.02, max_steps=40),
        ]
        if not self.takeover:
            return phases
        # Take over at the phase the scene is in, so that relabelled states agree with the
        # demonstrations (DAgger): a state mid-descent is labelled "descend", not "rise first".
        if carried:  # carried: on to the target, or settle and lower if already over it
            self.grasp_xy = self._eef()[:2]
            off = np.linalg.norm(over_target_xy() - self._eef()[:2])
            return phases[6:] if off < 0.03 else phases[4:]
        if around:  # fingers on it where it rests: finish closing, then lift (a missed grasp replans)
            self.grasp_xy = self._eef()[:2]
            return phases[3:]
        q = np.asarray(env.raw_obs["robot0_gripper_qpos"])
        eef, g = self._eef(), self._grasp_point()
        if q[0] - q[1] >= 0.07 and np.linalg.norm(eef[:2] - g[:2]) < 0.015 and -0.005 < eef[2] - g[2] < 0.09:
            return phases[2:]  # open, above the grasp: go on down
        prefix = []
        if q[0] - q[1] < 0.07:  # fingers not fully open (~0.08 apart when open): open before reaching
            prefix.append(Phase("open", here, OPEN, tol=1.0, min_steps=8, max_steps=8))
        start = self._eef()
        if start[2] < travel_z - 0.03:  # low among the objects: straight up before travelling
            prefix.append(Phase("rise", lambda: np.array([start[0], start[1], travel_z]), OPEN, tol=0.02, max_steps=60))
        return prefix + phases

    @staticmethod
    def _safe_height(boxes: gt.Boxes, start_xy, end_xy, z: float, below: float) -> float:
        """The lowest grip-site height >= z at which the straight path from start to end keeps
        what hangs `below` it and the hand above it 2 cm clear of every obstacle."""
        t = np.linspace(0, 1, 12)[:, None]
        xy = (1 - t) * np.asarray(start_xy) + t * np.asarray(end_xy)
        for height in np.arange(z, 1.4, 0.02):
            pts = np.concatenate([np.c_[xy, np.full(len(xy), height + dz)] for dz in (-below, 0.0, 0.1)])
            if len(boxes.centers) == 0 or boxes.distance(pts).min() > 0.02:
                return float(height)
        return float(z)

    def on_blocked(self, phase: Phase) -> bool:
        # the way down to the grasp is blocked (a fixture beside the object, e.g. an opened
        # drawer's front): rise and take the object from another side
        if not self.regrasp_when_blocked or phase.name not in ("above", "descend") or self.replans >= 3:
            return False
        self.replans += 1
        self.missed.add(self.grasp_index)
        self.phases, self.phase_index = self.plan(), 0
        return True

    def on_phase_end(self, phase: Phase) -> None:
        if phase.name == "descend":
            self.grasp_xy = self._eef()[:2]  # lift straight up from where the grasp happened
        if phase.name == "close":
            self.bottom_at_grasp = gt.object_info(self.env, self.obj).aabb_min[2]
        if phase.name == "lift" and self.takeover and self.replans < 2 and \
                gt.object_info(self.env, self.obj).aabb_min[2] < self.bottom_at_grasp + 0.015:
            # the object did not come up: a grasp from a scene someone else left can miss (a
            # tilted or wedged object); open, rise and plan the grasp again rather than carry nothing
            self.replans += 1
            self.missed.add(self.grasp_index)
            self.phases, self.phase_index = self.plan(), -1


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
        tilt = T.quat2mat(T.axisangle2quat(np.array([u[1], -u[0], 0.0]) * -np.radians(30)))
        self.R_goal = tilt @ _rot_z(np.arctan2(u[1], u[0]) - (0 if self.across else np.pi / 2)) @ self.R_down
        travel_z = PickPlace._safe_height(boxes, self._eef()[:2], over[:2], max(self._eef()[2], z + 0.1), 0.0)

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


class Door(Skill):
    """Swing a hinged door (a vertical hinge, e.g. a microwave's) shut: the closed fingers come
    down beside the door's face, on the side away from where it must go, 70% of the way out from
    the hinge, and follow the arc the door turns on, a little ahead of it, until the fixture
    reads closed. Opening a hinged door is not built (no LIBERO goal needs it yet)."""

    def __init__(self, env: LiberoEnv, fixture: str, gain: float = 20.0):
        super().__init__(env, gain)
        self.fixture = env.robosuite_env.get_object(fixture)
        self.joint = self.fixture.joints[0]
        art = self.fixture.object_properties["articulation"]
        self.closes_up = min(art["default_close_ranges"]) > max(art["default_open_ranges"])  # q grows as it shuts

    def _done(self) -> bool:
        return bool(self.fixture.is_close(gt.joint_info(self.env, self.joint).qpos))

    def _arc(self, ahead: float) -> tuple[np.ndarray, np.ndarray]:
        """(the point 70% out along the door, turned `ahead` radians further shut; the way it moves there)."""
        j = gt.joint_info(self.env, self.joint)
        r = j.boxes.centers[:, :2] - j.anchor[:2]
        reach = np.linalg.norm(r, axis=1).max() + 0.01
        out = r[np.argmax(np.linalg.norm(r, axis=1))]
        angle = np.arctan2(out[1], out[0]) + ahead * np.sign(j.axis[2]) * (1 if self.closes_up else -1)
        e = np.array([np.cos(angle), np.sin(angle)])
        n = np.sign(j.axis[2]) * (1 if self.closes_up else -1) * np.array([-e[1], e[0]])  # direction of travel
        return j.anchor[:2] + 0.7 * reach * e, n

    def plan(self) -> list[Phase]:
        if self._done():
            return []
        j = gt.joint_info(self.env, self.joint)
        top = float(j.boxes.extent_along([0, 0, 1]).max())
        z = float(j.anchor[2])  # the door's middle height
        p, n = self._arc(0.0)
        behind = np.array([*(p - 0.05 * n), z])  # 5 cm off the face, on the side it is pushed from
        boxes = gt.obstacle_boxes(self.env)
        travel_z = PickPlace._safe_height(boxes, self._eef()[:2], behind[:2], max(self._eef()[2], top + 0.08), 0.0)

        def along_arc():
            p, _ = self._arc(0.3)
            return np.array([*p, z])

        return [
            Phase("approach", lambda: np.array([behind[0], behind[1], travel_z]), CLOSE, tol=0.02, max_steps=100),
            Phase("descend", lambda: behind, CLOSE, tol=0.015, max_steps=60),
            Phase("swing", along_arc, CLOSE, reached=self._done, max_steps=120),
            Phase("retreat", lambda: self._eef() + [0, 0, 0.1], OPEN, tol=0.02, max_steps=30),
        ]


class Home(Skill):
    """Back to where the episode started, the hand pointing down: between a skill that turned the
    hand (a drawer's horizontal grip) and the next, whose straight path from there would stretch
    the arm into its elbow limit."""

    def plan(self) -> list[Phase]:
        home = self.env.start_eef_pos
        return [Phase("home", lambda: home, OPEN, tol=0.03, max_steps=60)]


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
        self.R_goal = _rot_z(self.yaw) @ self.R_down
        turn = (self.goal - j.qpos) * np.sign(j.axis[2])
        R_turned = _rot_z(self.yaw + turn) @ self.R_down
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
    Close: the same hand, fingers shut, pushes the handle in. Done by the fixture's own check."""

    def __init__(self, env: LiberoEnv, region: str, open: bool, gain: float = 20.0):
        super().__init__(env, gain)
        rs = env.robosuite_env
        site = rs.object_sites_dict[region]
        self.joint = site.joints[0]
        self.fixture = rs.get_object(site.parent_name)
        art = self.fixture.object_properties["articulation"]
        self.opens_negative = max(art["default_open_ranges"]) < min(art["default_close_ranges"])
        self.open = open

    def _done(self) -> bool:
        q = gt.joint_info(self.env, self.joint).qpos
        step = 0.01 if self.opens_negative else -0.01  # 1 cm against the opening direction
        # a little past the fixture's own threshold, so the goal check holds when the hand lets go
        return self.fixture.is_open(q + step) if self.open else self.fixture.is_close(q - step)

    def plan(self) -> list[Phase]:
        j = gt.joint_info(self.env, self.joint)
        out = -j.axis if self.opens_negative else j.axis  # the way the drawer slides open
        front = j.boxes.extent_along(out)
        handle = j.boxes.centers[front > front.max() - 0.01].mean(0)  # the parts that stick out most
        self.R_goal = _hand_along(self.R_down, -out)
        if self._done():
            return []  # already as wanted (LIBERO starts some drawers open)
        if not self.open:
            return [
                Phase("approach", lambda: handle + 0.10 * out, CLOSE, tol=0.015, max_steps=100),
                Phase("push", lambda: handle - 0.25 * out, CLOSE, reached=self._done, max_steps=100),
                Phase("retreat", lambda: self._eef() + 0.1 * out, OPEN, tol=0.02, min_steps=5, max_steps=20),
            ]
        return [
            Phase("approach", lambda: handle + 0.12 * out, OPEN, tol=0.015, max_steps=100),
            Phase("reach", lambda: handle + 0.005 * out, OPEN, tol=0.008, max_steps=50),
            Phase("close", lambda: handle, CLOSE, tol=1.0, min_steps=10, max_steps=10),
            Phase("pull", lambda: handle + 0.16 * out, CLOSE, reached=self._done, max_steps=80),
            Phase("release", lambda: self._eef(), OPEN, tol=1.0, min_steps=8, max_steps=8),
            Phase("retreat", lambda: handle + 0.24 * out, OPEN, tol=0.02, max_steps=20),
        ]

"""Scripted experts for RoboCasa's three kitchen tasks (envs.robocasa_env.TASKS), planned from the
simulator's ground truth at every step: targets are re-read from the sim and a proportional
controller on the hand's position and orientation, clipped to the action's [-1, 1], drives the arm.

Action frame and scale (measured): PandaOmron's OSC_POSE takes its deltas in the frame of the
arm's mount site `robot0_right_center` (input_ref_frame "base"), which in the kitchen is turned
90 degrees from the world (the robot faces the counter); one unit asks for 0.05 m / 0.5 rad from the
achieved pose, of which the arm covers about a quarter per step (~0.013 m/step at full speed).

Runs only under RoboCasa's interpreter (`.venv-robocasa`); only numpy is imported at module level.
"""

from __future__ import annotations

import numpy as np

from . import UnsupportedTask

POS_SCALE = 0.025  # metres of error that ask for a full unit (gain 2 on the controller's 0.05 m)
ROT_SCALE = 0.25   # radians likewise (0.5 rad per unit)
OPEN, CLOSE = -1.0, 1.0
UP = np.array([0.0, 0.0, 1.0])


def _rotvec(R: np.ndarray) -> np.ndarray:
    """Axis-angle of a rotation matrix."""
    angle = np.arccos(np.clip((np.trace(R) - 1.0) / 2.0, -1.0, 1.0))
    if angle < 1e-6:
        return np.zeros(3)
    if angle > np.pi - 1e-3:  # sin ~ 0: the axis is the column of R + I that is largest
        M = R + np.eye(3)
        axis = M[:, np.argmax(np.linalg.norm(M, axis=0))]
        return axis / np.linalg.norm(axis) * angle
    axis = np.array([R[2, 1] - R[1, 2], R[0, 2] - R[2, 0], R[1, 0] - R[0, 1]])
    return axis / (2.0 * np.sin(angle)) * angle


def _facing(approach: np.ndarray, tilt: float = 0.0) -> np.ndarray:
    """Hand orientation (world) whose fingers point along the horizontal `approach`, pitched down by
    `tilt` radians, the fingers closing horizontally: the start pose's wrist turned to face forward."""
    a = approach / np.linalg.norm(approach)
    z = np.cos(tilt) * a - np.sin(tilt) * UP
    y = np.cos(tilt) * UP + np.sin(tilt) * a
    return np.column_stack([np.cross(y, z), y, z])


def _yaw(quat_wxyz) -> float:
    w, x, y, z = quat_wxyz
    return float(np.arctan2(2 * (w * z + x * y), 1 - 2 * (y * y + z * z)))


def _front(fixture) -> np.ndarray:
    """Unit vector out of a fixture's front (RoboCasa fixtures face their local -y)."""
    rot = float(getattr(fixture, "rot", 0.0))
    return np.array([np.sin(rot), -np.cos(rot), 0.0])


class _Expert:
    """Phases over a ground-truth servo; subclasses give `_plan` (the phase at a (re)start) and
    `_target` (where the hand goes now, with which orientation and gripper; may change phase)."""

    def __init__(self, env):
        self.env, self.k = env, env.env
        self.phase, self.t = "start", 0

    def reset(self, takeover: bool = False) -> None:
        """Plan from the current state: an episode's start, or (takeover=True) wherever another
        policy left the scene."""
        self._go(self._plan(takeover))

    def act(self, obs=None) -> np.ndarray:
        pos, R, grip = self._target()
        self.t += 1
        return self._servo(pos, R, grip)

    def _go(self, phase: str) -> None:
        self.phase, self.t = phase, 0

    # ground truth
    def _eef(self):
        sim, site = self.k.sim, self.k.robots[0].eef_site_id["right"]
        return sim.data.site_xpos[site].copy(), sim.data.site_xmat[site].reshape(3, 3).copy()

    def _mount(self) -> np.ndarray:
        """Where the arm's mount (the frame of OSC_POSE's deltas) is, in the world."""
        return np.asarray(self.k.robots[0].composite_controller.get_controller_base_pose("right")[0])

    def _base_ori(self) -> np.ndarray:
        """The frame OSC_POSE reads its deltas in (the arm mount's), re-read: the base may turn."""
        ctrl = self.k.robots[0].composite_controller
        return np.asarray(ctrl.get_controller_base_pose("right")[1])

    def _err(self, pos, R) -> tuple[float, float]:
        p, E = self._eef()
        return float(np.linalg.norm(pos - p)), float(np.linalg.norm(_rotvec(R @ E.T)))

    def _servo(self, pos, R, grip) -> np.ndarray:
        p, E = self._eef()
        B = self._base_ori()
        v = B.T @ (np.asarray(pos) - p) / POS_SCALE
        w = B.T @ _rotvec(R @ E.T) / ROT_SCALE
        v, w = v / max(1.0, np.abs(v).max()), w / max(1.0, np.abs(w).max())  # keep the direction
        return np.clip(np.concatenate([v, w, [grip]]), -1, 1).astype(np.float32)


class PressButton(_Expert):
    """Face the button with closed fingers, stop 10 cm in front of it, press straight in until the
    fixture's state flips (or retry after a while), then back off beyond the task's 0.15 m."""

    TILT = 0.35  # fingers pitched down 20 degrees: a level hand puts the wrist (joint 6) at its limit

    def __init__(self, env, refs):
        super().__init__(env)
        self.refs = refs  # kitchen -> (fixture, button geom, pressed()): a reset rebuilds the kitchen

    def _plan(self, takeover: bool) -> str:
        self.fixture, self.button, self.pressed = self.refs(self.k)
        return "back" if self.pressed() else "approach"

    def _target(self):
        sim = self.k.sim
        b = sim.data.geom_xpos[sim.model.geom_name2id(self.button)].copy()
        n = _front(self.fixture)
        R = _facing(-n, self.TILT)
        if self.phase == "approach":
            pos = b + 0.10 * n
            d, r = self._err(pos, R)
            if (d < 0.01 and r < 0.05) or self.t > 80:
                self._go("press")
        if self.phase == "press":
            pos = b - 0.02 * n  # the fingertips reach the face first; the arm pushes gently on
            if self.pressed():
                self._go("back")
            elif self.t > 40:  # missed: line up again
                self._go("approach")
        if self.phase == "back":
            pos = b + 0.25 * n
        return pos, R, CLOSE


class PickPlace(_Expert):
    """Reach into the cabinet from the front, fingers square to the object's faces, close, lift,
    pull out, go down in front of the counter and in over a free spot of it (found once per episode
    by casting rays), the hand turned to point away from the arm's mount, lower until the object
    touches, release, slide the fingers off, retreat towards the mount (the way the arm came: a hand
    still turned as it grasped backs off sideways into open cabinet doors, or stalls with the arm
    wound up). A drop on the way starts over from where the object lies."""

    TILT = 0.6  # fingers pitched down 35 degrees: the wrist rides high, the forearm clears the cabinet floor
    PLACE_TILT = 0.8  # and down 45 degrees to reach the counter: level, the wrist or elbow hits its limit

    # ground truth of the object
    def _obj(self):
        sim, bid = self.k.sim, self.k.obj_body_id["obj"]
        half = np.asarray(self.k.objects["obj"].size) / 2
        return sim.data.body_xpos[bid].copy(), _yaw(sim.data.body_xquat[bid]), half

    def _held(self) -> bool:
        return bool(self.k._check_grasp(gripper=self.k.robots[0].gripper["right"], object_geoms=self.k.objects["obj"]))

    def _on_counter(self) -> bool:
        import robocasa.utils.object_utils as OU

        return bool(OU.check_obj_fixture_contact(self.k, "obj", self.k.counter))

    def _counter_top(self) -> float:
        c = self.k.counter
        return float(c.pos[2] + c.size[2] / 2)

    def _plan(self, takeover: bool) -> str:
        (o, yaw, _), (p, _) = self._obj(), self._eef()
        self.a, self.lift_from, self.release_at = self._approach(o, yaw), p, p
        self.spot = self._free_spot()
        to_spot = self.spot - self._mount()[:2]  # the hand sets the object down pointing away from
        self.place_dir = np.array([*to_spot / np.linalg.norm(to_spot), 0.0])  # the mount: backs off towards it
        if not takeover:
            return "pre"
        if self._held():  # carried on from where the hand holds it
            return "lift"
        return "release" if self._on_counter() else "pre"

    def _approach(self, o: np.ndarray, yaw_obj: float, keep: np.ndarray | None = None) -> np.ndarray:
        """Horizontal approach turned to meet the object's face square (the open pads clear a 5.5 cm
        box by under 8 mm a side): the face nearest the line from the arm's mount to the object,
        as the arm reaches most easily (across its front it stalls), a quarter as much the line
        straight into the cabinet (a box turned near 45 degrees: the wrist slanted in hits a side
        wall); with `keep` (an approach already under way), the face nearest it: a box the fingers
        nudge past 45 degrees must not flip the hand a quarter turn (the spinning hand bats it away)."""
        def off(ang, ref):
            return abs((ang - ref + np.pi) % (2 * np.pi) - np.pi)

        base = np.arctan2(o[1] - self._mount()[1], o[0] - self._mount()[0])
        inward = np.arctan2(*(-_front(self.k.cab)[1::-1]))
        faces = yaw_obj + np.arange(4) * np.pi / 2
        if keep is not None:
            ang = min(faces, key=lambda f: off(f, np.arctan2(keep[1], keep[0])))
        else:
            ang = min(faces, key=lambda f: off(f, base) + 0.25 * off(f, inward))
        return np.array([np.cos(ang), np.sin(ang), 0.0])

    def _out_of_cabinet(self, p: np.ndarray) -> np.ndarray:
        """`p` moved straight out through the cabinet's front to 15 cm before it (or left further out)."""
        cab, n = self.k.cab, _front(self.k.cab)
        front = np.asarray(cab.pos, float) + n * float(cab.size[1]) / 2
        return p + n * max(0.0, 0.15 - float(np.dot(p - front, n)))

    def _waypoints(self) -> dict:
        """Where the hand goes in each phase, from the scene as it is now."""
        o, yaw, half = self._obj()
        p, _ = self._eef()
        if self.phase in ("pre", "reach"):  # re-read until the fingers close
            self.a = self._approach(o, yaw, self.a if self.phase == "reach" else None)
        a = self.a
        grasp = o + np.array([0, 0, min(0.015, half[2] / 2)])
        place = np.array([self.spot[0], self.spot[1], self._counter_top() + half[2] + 0.012])
        lifted = self.lift_from + np.array([0, 0, 0.04])
        out = self._out_of_cabinet(lifted)
        hover, side = place + np.array([0, 0, 0.10]), np.cross(UP, _front(self.k.counter))  # along the counter
        along = float(np.dot(p - grasp, a))  # ahead, as near as the hand is to the line in: the pads clear
        off = float(np.linalg.norm(p - grasp - along * a))  # the box by mm, a lagging hand pushes it away
        down = np.array([out[0], out[1], place[2] + 0.18])  # not lower this close to the robot: the elbow
        return {"pre": grasp - 0.13 * a,
                "reach": grasp + a * min(0.0, along + np.clip(0.03 - 2.0 * off, 0.005, 0.03)),  # a carrot 0.5-3 cm
                "close": grasp, "lift": lifted, "out": out,
                "down": down, "across": down + side * np.dot(hover - down, side),  # below the cabinet's front,
                "over": hover, "lower": place, "release": self.release_at,  # then in over the spot
                "back": self.release_at - 0.10 * self._orientation()[:, 2],  # fingers slide off it
                "retreat": self.release_at - 0.10 * self._orientation()[:, 2] - 0.12 * self.place_dir + 0.15 * UP}

    def _orientation(self) -> np.ndarray:
        low = self.phase in ("down", "across", "over", "lower", "release", "back", "retreat")
        return _facing(self.place_dir, self.PLACE_TILT) if low else _facing(self.a, self.TILT)

    def _target(self):
        if self.phase in ("out", "down", "across", "over", "lower") and not self._held():
            # dropped on the way: pick it up again from where it lies; slipped out on the counter: let go
            self._go("release" if self.phase == "lower" and self._on_counter() else "pre")
            self.release_at = self._eef()[0] if self.phase == "release" else self.release_at
        way, p = self._waypoints(), self._eef()[0]
        d, r = self._err(way["close" if self.phase == "reach" else self.phase], self._orientation())
        if self.phase == "pre" and ((d < 0.006 and r < 0.04) or self.t > 100):
            self._go("reach")
        elif self.phase == "reach" and (d < 0.008 or self.t > 60):
            self._go("close")
        elif self.phase == "close" and self.t > 10:
            self._go("lift" if self._held() else "pre")
            self.lift_from = p
        elif self.phase == "lift" and (d < 0.015 or self.t > 30):  # a wrist under a shelf may stop short
            self._go("out")
        elif self.phase in ("out", "down", "across") and (d < 0.02 or self.t > 60):
            self._go({"out": "down", "down": "across", "across": "over"}[self.phase])
        elif self.phase == "over" and (d < 0.015 or self.t > 100):
            self._go("lower")
        elif self.phase == "lower" and (self._on_counter() or d < 0.005 or self.t > 40):
            self._go("release")
            self.release_at = p
        elif self.phase == "release" and (np.abs(self.env.raw_obs["robot0_gripper_qpos"]).min() > 0.035 or self.t > 15):
            self._go("back")
        elif self.phase == "back" and (d < 0.01 or self.t > 30):
            self._go("retreat")
        grip = OPEN if self.phase in ("pre", "reach", "release", "back", "retreat") else CLOSE
        return self._waypoints()[self.phase], self._orientation(), grip

    def _free_spot(self) -> np.ndarray:
        """A spot on the counter's top for the object, the one nearest half a metre ahead of the
        arm's mount (nearer, the elbow folds to its limit low down) where rays cast straight down
        meet the counter's own top under the object and nothing standing around it or on the way in
        from the counter's front, within the hand's reach (a sink, an appliance, another object; the
        rays pass through the robot, which moves out of the way)."""
        import mujoco

        k, top = self.k, self._counter_top()
        model, data, gid = k.sim.model._model, k.sim.data._data, np.zeros(1, np.int32)
        names = [model.geom(i).name for i in range(model.ngeom)]
        c = k.counter
        n, side, centre = _front(c), np.cross(UP, _front(c)), np.asarray(c.pos, float)
        mount, B = (np.asarray(v) for v in k.robots[0].composite_controller.get_controller_base_pose("right"))
        aim = mount + 0.5 * B[:, 0]
        r = float(np.linalg.norm(self._obj()[2][:2])) + 0.04  # the object may slide a little as it lands
        ring = [np.array([np.cos(t), np.sin(t), 0.0]) for t in np.arange(8) * np.pi / 4]

        robot = model.body_rootid[model.site_bodyid[k.robots[0].eef_site_id["right"]]]

        def hit(q):  # height and geom of what a ray straight down meets (below the wall cabinets),
            z = top + 0.35  # seen through the robot itself: its arm moves out of the way
            while (d := mujoco.mj_ray(model, data, np.array([q[0], q[1], z]), -UP, None, 1, -1, gid)) >= 0:
                if model.body_rootid[model.geom_bodyid[gid[0]]] != robot:
                    return z - d, names[gid[0]]
                z -= d + 1e-4
            return -np.inf, ""

        def fits(q) -> bool:
            for z, name in (hit(q + r * u) for u in [np.zeros(3)] + ring):
                if abs(z - top) > 0.01 or not name.startswith(c.naming_prefix):
                    return False
            return all(hit(q + s * n + 0.12 * u)[0] < top + 0.01
                       for s in np.arange(0.0, 0.31, 0.05) for u in [np.zeros(3)] + ring)

        along = np.dot(aim - centre, side)
        edge = centre + n * float(c.size[1]) / 2
        candidates = [edge - depth * n + (along + off) * side
                      for depth in np.arange(0.08, 0.41, 0.04) for off in np.arange(-0.8, 0.81, 0.04)]
        # nearer the mount than 0.42 m the hand stops short of the counter (a 14 cm drop at 0.27 m):
        # every cm inside that counts as 2 cm off the aim
        candidates.sort(key=lambda q: np.linalg.norm((q - aim)[:2])
                        + 2.0 * max(0.0, 0.42 - float(np.linalg.norm((q - mount)[:2]))))
        return next((q[:2] for q in candidates if fits(q)), (edge - 0.15 * n)[:2])


def _microwave_stop(k):
    mw = k.microwave
    return mw, f"{mw.naming_prefix}stop_button", lambda: not mw.get_state()["turned_on"]


def _coffee_start(k):
    cm = k.coffee_machine
    return cm, f"{cm.naming_prefix}{cm._start_button_names[0]}", lambda: cm.get_state()["turned_on"]


EXPERTS = {"TurnOffMicrowave": (PressButton, _microwave_stop), "StartCoffeeMachine": (PressButton, _coffee_start),
           "PickPlaceCabinetToCounter": (PickPlace, None)}


def make_robocasa_expert(env):
    """The scripted expert for a RoboCasaEnv's task; UnsupportedTask for tasks without one. It reads
    the scene at each reset(), so one expert serves many episodes."""
    if env.task not in EXPERTS:
        raise UnsupportedTask(f"no scripted RoboCasa expert for {env.task}")
    cls, refs = EXPERTS[env.task]
    return cls(env, refs) if refs else cls(env)

"""Pick-and-place of movable objects: grasps by rule, or found by search for awkward shapes;
onto surfaces, into containers and drawers, and through the opening of a roofed region."""

from __future__ import annotations

import numpy as np

from . import ground_truth as gt
from .grasps import search_top_grasp, top_at
from .libero_env import LiberoEnv
from .skills import CLOSE, OPEN, ROBOT_BODIES, Phase, Skill, clearance, closing_direction, lean, rot_z, safe_height


class PickPlace(Skill):
    """Pick `obj` and put it on / in `target` (an object or a BDDL region site)."""

    def __init__(self, env: LiberoEnv, obj: str, target: str, gain: float = 20.0, predicate: str = "on",
                 regrasp_when_blocked: bool = False, slot: tuple[int, int] = (0, 1)):
        super().__init__(env, gain)
        self.obj, self.target, self.predicate = obj, target, predicate
        self.slot = slot  # (which, of how many) objects the goal puts onto this region
        self.regrasp_when_blocked = regrasp_when_blocked

    def reset(self, R_down: np.ndarray | None = None, takeover: bool = False) -> None:
        # regrasps after a missed grasp: how many, which sides missed, the object's height when the fingers closed
        self.replans, self.missed, self.z_at_grasp = 0, set(), -np.inf
        self.entry = None
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

    def goal_holds(self) -> bool:
        return bool(self.env.robosuite_env._eval_predicate([self.predicate, self.obj, self.target]))

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
        return pos[:2] + self.region_offset, float(pos[2]) if self.entry is None else self.floor

    def _free_spot(self) -> np.ndarray:
        """Where in a target region to put the object, as an offset from the region's centre: its own
        place when the goal puts several objects onto the region; else the centre, unless something
        already stands there (a moka pot on the stove before); then the point of the region (2 cm
        inside its edge) farthest from the other objects. Only
        on a surface: into a container (a basket) the centre, where the object comes to rest against
        what is already there; the search does not see the container's walls and chose spots on them."""
        rs = self.env.robosuite_env
        site = rs.object_sites_dict.get(self.target)
        if self.predicate != "on" or self.target in rs.obj_body_id or site is None or not hasattr(site, "size"):
            return np.zeros(2)
        centre = gt.site_position(self.env, self.target)
        which, count = self.slot
        if count > 1:  # side by side across their narrow axis, 2.5 cm inside the edge; the first farthest from the robot
            axis = gt.narrow_axis(self.env, self.obj)
            local = gt.site_rotation(self.env, self.target).T @ [*axis, 0.0]  # the axis in the region's box
            extent = float(np.abs(local[:2]) @ np.maximum(np.abs(np.asarray(site.size[:2], float)) - 0.025, 0.0))
            slots = [axis * p for p in np.linspace(-extent, extent, count)]
            base = gt.body_position(self.env, "robot0_base")[:2]
            return sorted(slots, key=lambda s: -np.linalg.norm(centre[:2] + s - base))[which]
        others = gt.obstacle_boxes(self.env, exclude=(self.obj, site.parent_name or ""))
        if not len(others.centers):
            return np.zeros(2)
        half = np.maximum(np.abs(np.asarray(site.size[:2], float)) - 0.02, 0.0)

        def room(offset):
            pts = np.array([[*(centre[:2] + offset), centre[2] + dz] for dz in (0.02, 0.06, 0.1)])
            return float(others.distance(pts).min())

        if room(np.zeros(2)) > 0.05:
            return np.zeros(2)
        grid = [np.array([x, y]) for x in np.linspace(-half[0], half[0], 9) for y in np.linspace(-half[1], half[1], 9)]
        return max(grid, key=lambda g: (round(room(g), 3), -np.linalg.norm(g)))

    def _entry(self, boxes: gt.Boxes) -> np.ndarray | None:
        """Into a region under a roof (a microwave's inside), where nothing can be lowered from
        above: the unit xy direction out of its opening (and self.floor, the height of what the
        object will stand on); None for a region open from above, a drawer's, or an object."""
        rs = self.env.robosuite_env
        site = rs.object_sites_dict.get(self.target)
        if site is None or self.target in rs.obj_body_id or getattr(site, "joints", None) or not len(boxes.centers):
            return None
        c = gt.site_position(self.env, self.target)
        column = np.array([[c[0], c[1], z] for z in np.arange(c[2] + 0.3, c[2] - 0.3, -0.003)])
        solid = boxes.distance(column).min(1) == 0
        below = np.flatnonzero(solid & (column[:, 2] <= c[2]))
        above = np.flatnonzero(solid & (column[:, 2] > c[2]))
        if not len(below) or not len(above):
            return None
        self.floor, roof = float(column[below[0], 2]), float(column[above[-1], 2])
        # the opening: the one of the region's four horizontal sides (its fixture's axes) through
        # which a ray at mid-height leaves, 30 cm without touching anything; the robot's side first
        mid = np.array([c[0], c[1], 0.5 * (self.floor + roof)])
        R = gt.site_rotation(self.env, self.target)
        sides = [sign * R[:, k] * [1, 1, 0] for k in (0, 1) for sign in (1, -1)]
        sides = [u / np.linalg.norm(u) for u in sides if np.linalg.norm(u) > 0.5]
        out = [u for u in sides if boxes.distance(mid + np.arange(0.0, 0.3, 0.01)[:, None] * u).min() > 0.01]
        return min(out, key=lambda u: u[0])[:2] if out else None

    def _entry_path(self, boxes: gt.Boxes) -> tuple[np.ndarray, np.ndarray]:
        """(front, place): offsets from the region's centre of the object's origin when it is just
        in front of the opening (it comes down there) and when it is as deep inside as it and the
        hand (its collision mesh, turned as planned) go without touching anything, sliding in 1 cm
        above the floor; the deepest over a few lateral positions (a panel beside the opening
        stops the hand's end)."""
        o = gt.object_info(self.env, self.obj)
        shape = gt.object_boxes(self.env, self.obj).corners() - o.position
        hand = gt.hand_points(self.env) @ self.R_goal.T + (self._grasp_point() - o.position)
        points = np.concatenate([shape, hand])
        c = gt.site_position(self.env, self.target)
        base = np.array([c[0], c[1], self.floor + 0.01 + o.position[2] - o.aabb_min[2]])
        u = np.array([*self.entry, 0.0])
        v = np.array([-u[1], u[0], 0.0])

        def clear(t, side, up=0.0):
            return boxes.distance(points + base + t * u + side * v + [0, 0, up]).min() > 0.005

        best = None
        for side in sorted(np.arange(-0.06, 0.061, 0.01), key=abs):
            ts = np.arange(0.0, 0.4, 0.005)
            front = next((t for t in ts if clear(t, side, 0.05) and clear(t, side, 0.1)), None)
            if front is None or not clear(front, side):
                continue
            place = front
            while place - 0.005 >= 0 and clear(place - 0.005, side):
                place -= 0.005
            if best is None or place < best[1] - 0.004:
                best = (front, place, side)
        front, place, side = best or (0.0, 0.0, 0.0)
        return (front * u + side * v)[:2], (place * u + side * v)[:2]

    def _grasp_candidates(self) -> list[tuple[np.ndarray, float]]:
        """(grip-site position, gripper yaw) options. Yaw 0 closes the fingers along world y.

        A wide object (bowl, plate) is taken by its wall: one option per side. A narrow one is
        taken from above across its narrower horizontal axis."""
        o = gt.object_info(self.env, self.obj)
        c, size = o.center, o.size
        z = o.aabb_max[2] - min(0.025, 0.5 * size[2])
        if self.entry is not None:  # into a roofed region: held by its part nearest the opening
            found = search_top_grasp(self.env, self.obj, toward=self.entry)
            if found is not None:
                return [found]
        if min(size[0], size[1]) > 0.07:
            top = top_at(gt.object_boxes(self.env, self.obj), c[:2], o)
            if top is not None and top > o.aabb_max[2] - 0.03:  # closed on top (a moka pot): no wall to take
                found = search_top_grasp(self.env, self.obj)
                if found is not None:
                    return [found]
            rim = 0.5 * min(size[0], size[1]) - 0.012
            if np.linalg.norm(o.position[:2] - c[:2]) > 0.02:  # a handle stretches the box (a frying pan):
                c = np.array([*o.position[:2], c[2]])  # the wall runs round the body's origin, its middle
            # the side facing the robot first: it keeps the arm least stretched when placing
            return [(np.array([c[0] - rim, c[1], z]), np.pi / 2), (np.array([c[0], c[1] - rim, z]), 0.0),
                    (np.array([c[0], c[1] + rim, z]), 0.0), (np.array([c[0] + rim, c[1], z]), np.pi / 2)]
        narrow = gt.narrow_axis(self.env, self.obj)
        # turn the closing direction (world y, angle pi/2) onto the narrow axis; the gripper is
        # symmetric, so the smallest such turn lies in [-pi/2, pi/2)
        yaw = np.arctan2(narrow[1], narrow[0]) % np.pi - np.pi / 2
        return [(np.array([c[0], c[1], z]), float(yaw))]

    def _choose_grasp(self, boxes: gt.Boxes) -> None:
        options = [(g, yaw, None) for g, yaw in self._grasp_candidates()]
        o = gt.object_info(self.env, self.obj)
        # what the object stands on is below every option alike: it must not decide
        boxes = boxes[boxes.extent_along([0, 0, 1]) > o.aabb_min[2] + 0.005]
        if not self._column_clear(boxes, np.zeros(2)):
            # something hangs over the object (a bowl just in front of an opened drawer): each option
            # also with the hand leaning 20 degrees either way about the fingers' closing direction,
            # its body out from under the overhang while the fingers still close level
            options += [(g, yaw, s * np.sin(np.radians(20)) * np.cross([0, 0, 1.0], closing_direction(yaw)))
                        for g, yaw, _ in list(options) for s in (1, -1)]
        # room counts up to 5 cm; among options with that much, the first listed (upright) wins
        scores = [min(clearance(g, yaw, boxes, lean_toward=t), 0.05) - 0.001 * i
                  for i, (g, yaw, t) in enumerate(options)]
        if self.takeover:  # a hand already lined up over an option (the learner's approach) keeps it
            eef = self._eef()
            for i, (g, *_) in enumerate(options):
                if np.linalg.norm(eef[:2] - g[:2]) < 0.015 and -0.005 < eef[2] - g[2] < 0.09:
                    scores[i] += 1.0
        missed = [i for i in self.missed if i < len(options)]
        if len(missed) < len(options):  # after a missed grasp, another side first
            for i in missed:
                scores[i] = -np.inf
        i = int(np.argmax(scores))
        self.grasp_index, self.grasp_offset, self.yaw, self.lean_toward = i, options[i][0] - o.center, *options[i][1:]

    def _upright(self) -> np.ndarray:
        """The grasp's hand pointing straight down."""
        return rot_z(self.yaw) @ self.R_down

    def _grasp_point(self) -> np.ndarray:
        return gt.object_info(self.env, self.obj).center + self.grasp_offset

    def plan(self) -> list[Phase]:
        env = self.env
        # at a takeover: fingers on the object (not after a missed grasp); carried if only the hand touches it
        around = self.takeover and not self.missed and self._fingers_around()
        carried = around and all(b.startswith(ROBOT_BODIES) for b in gt.bodies_touching(env, self.obj))
        if self.takeover and self.goal_holds():
            return []  # taken over after this goal was reached
        boxes = gt.obstacle_boxes(env, exclude=(self.obj,))
        self.region_offset = self._free_spot()
        self.entry = self._entry(boxes)
        self._choose_grasp(boxes)
        if around:  # grasp where the hand already is, turned as it is
            self.grasp_offset = self._eef() - gt.object_info(env, self.obj).center
            self.yaw, _ = self._hand_yaw()
            self.lean_toward = None
        self.yaw = self.nearer_equivalent(self.yaw)
        t = 0.0 if self.lean_toward is None else np.linalg.norm(self.lean_toward)  # the lean's sine
        self.R_goal = (lean(self.lean_toward / t, -np.arcsin(t)) if t else np.eye(3)) @ self._upright()
        grasp = self._grasp_point()
        below_grip = grasp[2] - gt.object_info(env, self.obj).aabb_min[2]  # object bottom below the grip site
        if self.entry is not None:  # comes down in front of the opening, then slides in
            front, self.region_offset = self._entry_path(boxes)
            front_offset = front - self.region_offset
        place_xy, target_top = self._target_info()
        if self.entry is not None:
            place_xy = place_xy + front_offset
        shift = self._slide_before_lift(boxes)
        # the grip site's path: it ends off the target by the grasp's offset (a bowl held by its wall)
        o = gt.object_info(env, self.obj)
        outline = [np.array([x, y]) - grasp[:2] for x in (o.aabb_min[0], o.center[0], o.aabb_max[0])
                   for y in (o.aabb_min[1], o.center[1], o.aabb_max[1])]
        carry_z = safe_height(boxes, grasp[:2] + shift, place_xy + self.grasp_offset[:2],
                              max(grasp[2], target_top + below_grip) + 0.09, below_grip, self.yaw, outline)
        travel_z = safe_height(boxes, self._eef()[:2], grasp[:2], max(self._eef()[2], grasp[2] + 0.08), 0.0)

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

        def slid():
            return np.array([*(self.grasp_xy + shift), grasp[2] + 0.015])

        def retreat():
            p = self._eef()
            return np.array([p[0], p[1], carry_z])

        def here():
            return self._eef()

        def in_front(up=0.0):
            p = at_place(0.01 + up)
            return np.array([*(p[:2] + front_offset), p[2]])

        self.grasp_xy = grasp[:2]
        placing = [
            Phase("carry", above_place, CLOSE, tol=0.01, max_steps=100),
            # settle the swing a few cm up, so the last part of the descent is straight down
            Phase("align", lambda: at_place(0.04), CLOSE, tol=0.006, min_steps=5, max_steps=40),
            Phase("lower", at_place, CLOSE, tol=0.015, max_steps=60),
            Phase("release", here, OPEN, tol=1.0, min_steps=8, max_steps=8),
            Phase("retreat", retreat, OPEN, tol=0.02, max_steps=40),
        ] if self.entry is None else [  # under a roof: down in front of the opening, in, and out again
            Phase("carry", lambda: np.array([*in_front()[:2], carry_z]), CLOSE, tol=0.01, max_steps=100),
            Phase("align", lambda: in_front(0.04), CLOSE, tol=0.006, min_steps=5, max_steps=40),
            Phase("front", in_front, CLOSE, tol=0.008, max_steps=60),
            Phase("insert", lambda: at_place(), CLOSE, tol=0.006, max_steps=80),
            Phase("lower", lambda: at_place(0.003), CLOSE, tol=0.006, max_steps=30),
            Phase("release", here, OPEN, tol=1.0, min_steps=8, max_steps=8),
            Phase("withdraw", lambda: self.released_at + [*front_offset, 0.01], OPEN, tol=0.02, max_steps=60),
            Phase("retreat", retreat, OPEN, tol=0.02, max_steps=40),
        ]
        phases = [
            Phase("approach", over_grasp, OPEN, tol=0.02, max_steps=100),
            Phase("above", above_grasp, OPEN, tol=0.01, max_steps=40),
            Phase("descend", at_grasp, OPEN, tol=0.01, max_steps=60),
            Phase("close", at_grasp, CLOSE, tol=1.0, min_steps=10, max_steps=10),
            *([Phase("slide", slid, CLOSE, tol=0.01, max_steps=40)] if shift.any() else []),
            Phase("lift", lifted, CLOSE, tol=0.02, max_steps=60),
            *placing,
        ]
        if not self.takeover:
            return phases
        # Take over at the phase the scene is in, so that relabelled states agree with the
        # demonstrations (DAgger): a state mid-descent is labelled "descend", not "rise first".
        if carried:  # carried: on to the target, or settle and lower if already over it
            self.grasp_xy = self._eef()[:2]
            off = np.linalg.norm(over_target_xy() - self._eef()[:2])
            return phases[6:] if off < 0.03 and self.entry is None else phases[4:]
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

    def _footprint_clear(self, boxes: gt.Boxes, shifts, zs, margin: float) -> bool:
        """Nothing within `margin` of the object's footprint (a 5 x 5 grid over its box), moved by
        each of `shifts` (xy), at each of the heights `zs`."""
        o = gt.object_info(self.env, self.obj)
        xs, ys = (np.linspace(lo, hi, 5) for lo, hi in zip(o.aabb_min[:2], o.aabb_max[:2]))
        pts = np.array([[x + s[0], y + s[1], z] for s in shifts for x in xs for y in ys for z in zs])
        return not len(boxes.centers) or boxes.distance(pts).min() > margin

    def _column_clear(self, boxes: gt.Boxes, shift: np.ndarray) -> bool:
        """Nothing hangs over the object (moved by `shift`): the room it and the hand need to rise."""
        o = gt.object_info(self.env, self.obj)
        return self._footprint_clear(boxes, [shift], np.arange(o.aabb_max[2] + 0.01, o.aabb_max[2] + 0.3, 0.02), 0.01)

    def _slide_clear(self, boxes: gt.Boxes, shift: np.ndarray) -> bool:
        """The object, slid `shift` along the table 1.5 cm up, touches nothing on the way."""
        o = gt.object_info(self.env, self.obj)
        return self._footprint_clear(boxes, [t * shift for t in np.linspace(0.25, 1, 4)],
                                     np.arange(o.aabb_min[2] + 0.025, o.aabb_max[2] + 0.015, 0.02), 0.005)

    def _slide_before_lift(self, boxes: gt.Boxes) -> np.ndarray:
        """How far (xy) to slide the grasped object, just off the table, before lifting it: none
        when nothing hangs over it; else the shortest slide (toward the robot when two tie)
        after which the column over it is clear (a bowl under an opened drawer)."""
        if self._column_clear(boxes, np.zeros(2)):
            return np.zeros(2)
        for dist in np.arange(0.03, 0.16, 0.02):
            for angle in np.radians(np.arange(180, 540, 22.5)) % (2 * np.pi):  # from -x (the robot) round
                shift = dist * np.array([np.cos(angle), np.sin(angle)])
                if self._column_clear(boxes, shift) and self._slide_clear(boxes, shift):
                    return shift
        return np.zeros(2)

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
        if phase.name in ("descend", "slide"):
            self.grasp_xy = self._eef()[:2]  # lift straight up from where the grasp happened
        if phase.name == "release":
            self.released_at = self._eef()
        if phase.name == "lift":
            self.R_goal = self._upright()  # a leaning grasp is clear of the overhang once up
        if phase.name == "close":
            self.z_at_grasp = gt.object_info(self.env, self.obj).center[2]
        # its centre, not its lowest point: a bowl held by one wall hangs tilted as it comes up
        if phase.name == "lift" and self.replans < 2 and \
                gt.object_info(self.env, self.obj).center[2] < self.z_at_grasp + 0.015:
            # the object did not come up: a grasp can miss (a tilted or wedged object, a scene
            # someone else left, a way down blocked short of the grasp); open, rise and plan the
            # grasp again rather than carry nothing (the carry's target follows the object, so
            # an empty hand would chase it off the table)
            self.replans += 1
            self.missed.add(self.grasp_index)
            self.phases, self.phase_index = self.plan(), -1

"""Spatial questions with exact answers, computed from a Scene's ground truth.

Objects are pointed at with coloured points drawn on the images (visual prompts, as SPAR and
CrossView do), so two black bowls are never ambiguous; only the visibility question names objects,
and only objects whose name is unique in the scene. Every relation question requires a clear
margin, so the answer does not hinge on millimetres. Camera-frame axes: x right, y down, z forward.
"""

from __future__ import annotations

import re

import numpy as np
from PIL import Image, ImageDraw

from .scene import MIN_VISIBLE_PIXELS, Scene, View

COLORS = {"red": (235, 30, 30), "blue": (40, 90, 255), "green": (30, 200, 50), "yellow": (250, 220, 0),
          "purple": (170, 50, 210)}
# depth order in metres; left/right and above/below compare image-plane bearings (x/z, y/z), as a
# viewer judges them, so a far object is never "left" of a near one it appears right of
MARGIN = {"depth_order": 0.05, "lateral": 0.03, "side": 0.03}
MOTIONS = ("left", "right", "up", "down", "forward", "backward", "turned left", "turned right")
SINGLE_VIEW = ("depth", "closer", "distance", "left_right", "above_below", "front_behind", "position")
MULTI_VIEW = ("correspondence", "visibility", "camera_motion", "gripper_direction", "gripper_distance")
# grounding: what the task's own instruction refers to (its BDDL goal's object and target), asked
# with the instruction in the question and no visual prompt, as the policy must find it
ROLES = ("object", "target")
GROUNDING = tuple(f"{kind}_{role}" for role in ROLES for kind in ("point", "choose", "position", "direction", "distance"))
TASK_TYPES = SINGLE_VIEW + MULTI_VIEW + GROUNDING
NUMERIC = {"depth", "distance", "position", "gripper_distance", *(f"{k}_{r}" for k in ("position", "distance") for r in ROLES)}
# positions in the robot-base frame are scored by absolute error (1..10 cm thresholds): relative to
# their ~0.7 m norm, MRA would pass a guess that is 3 cm off
ABSOLUTE = {f"position_{r}" for r in ROLES}
POINTING = {f"point_{r}" for r in ROLES}  # "x, y" in [0, 1] image coordinates, right when inside the object's mask
WORLD_CAMERAS = ("agentview", "frontview", "sideview", "birdview")
ROLE_WORDS = {"object": "the object the task manipulates", "target": "the place where the task puts it"}
DIRECTIONS = ("in front of", "behind", "to the left of", "to the right of", "above", "below")


def readable(name: str) -> str:
    """LIBERO object name -> words: 'akita_black_bowl_1' -> 'akita black bowl'."""
    return re.sub(r"_\d+$", "", name).replace("_", " ")


def draw_marks(image: np.ndarray, marks: list[tuple[tuple[int, int], str]]) -> np.ndarray:
    """Filled coloured points with a white rim at pixel (u, v)."""
    im = Image.fromarray(image)
    draw = ImageDraw.Draw(im)
    r = max(2, image.shape[0] // 40)
    for (u, v), color in marks:
        draw.ellipse([u - r - 1, v - r - 1, u + r + 1, v + r + 1], fill=(255, 255, 255))
        draw.ellipse([u - r, v - r, u + r, v + r], fill=COLORS[color])
    return np.asarray(im)


def _visible(view: View) -> list[int]:
    return [k for k in range(1, int(view.labels.max()) + 1) if view.visible(k) >= MIN_VISIBLE_PIXELS]


def _record(task_type, question, answer, images, gt, choices=()):
    return {"task_type": task_type, "question": question, "answer": answer, "choices": list(choices),
            "images": images, "gt": gt}


def _num(x: float) -> str:
    return f"{x:.2f}"


class QuestionMaker:
    """Makes one question of a given type for a scene, or None when the scene does not allow it
    (too few visible objects, no pair with a clear margin)."""

    def __init__(self, scene: Scene, rng: np.random.Generator):
        self.scene, self.rng = scene, rng
        self.single_views = [v for v in scene.views.values() if len(_visible(v)) >= 2]

    def make(self, task_type: str) -> dict | None:
        if task_type in GROUNDING:
            kind, role = task_type.split("_")
            if role not in self.scene.roles:
                return None
            return getattr(self, f"ground_{kind}")(role)
        if task_type in SINGLE_VIEW:
            if not self.single_views:
                return None
            view = self.single_views[self.rng.integers(len(self.single_views))]
            return getattr(self, task_type)(view, self._pair(view))
        return getattr(self, task_type)()

    def _pair(self, view: View) -> tuple[int, int]:
        a, b = self.rng.choice(_visible(view), 2, replace=False)
        return int(a), int(b)

    def _cam(self, view: View, k: int) -> np.ndarray:
        return view.to_camera(self.scene.centers[k - 1])

    def _marked(self, view: View, *ks: int) -> np.ndarray:
        return draw_marks(view.image, [(view.mark_pixel(k), c) for k, c in zip(ks, ("red", "blue"))])

    def _gt(self, view: View, *ks: int, **extra) -> dict:
        return {"camera": view.camera, "objects": [self.scene.objects[k - 1] for k in ks],
                "camera_xyz": [self._cam(view, k).round(4).tolist() for k in ks], **extra}

    # -- single view ----------------------------------------------------------------------
    def depth(self, view, pair):
        a = pair[0]
        z = float(self._cam(view, a)[2])
        q = "How far from the camera is the object at the red point, in metres (depth along the view direction)?"
        return _record("depth", q, _num(z), [draw_marks(view.image, [(view.mark_pixel(a), "red")])],
                       self._gt(view, a, value=z))

    def _relation(self, task_type, view, pair, axis, margin, words, question):
        a, b = pair
        pa, pb = self._cam(view, a), self._cam(view, b)
        da, db = (pa[axis], pb[axis]) if axis == 2 else (pa[axis] / pa[2], pb[axis] / pb[2])
        if abs(da - db) < margin:
            return None
        answer = words[0] if da < db else words[1]
        return _record(task_type, question, answer, [self._marked(view, a, b)],
                       self._gt(view, a, b, value=float(da - db)), choices=words)

    def closer(self, view, pair):
        return self._relation("closer", view, pair, 2, MARGIN["depth_order"], ("red", "blue"),
                              "Which object is closer to the camera: the one at the red point or the one at the blue point?")

    def left_right(self, view, pair):
        return self._relation("left_right", view, pair, 0, MARGIN["lateral"], ("left", "right"),
                              "From the camera's viewpoint, is the object at the red point to the left or to the right of the object at the blue point?")

    def above_below(self, view, pair):
        return self._relation("above_below", view, pair, 1, MARGIN["lateral"], ("above", "below"),
                              "In the camera's frame, is the object at the red point above or below the object at the blue point?")

    def front_behind(self, view, pair):
        return self._relation("front_behind", view, pair, 2, MARGIN["depth_order"], ("in front", "behind"),
                              "Seen from the camera, is the object at the red point in front of or behind the object at the blue point?")

    def distance(self, view, pair):
        a, b = pair
        d = float(np.linalg.norm(self.scene.centers[a - 1] - self.scene.centers[b - 1]))
        q = "How far apart are the objects at the red point and the blue point, in metres?"
        return _record("distance", q, _num(d), [self._marked(view, a, b)], self._gt(view, a, b, value=d))

    def position(self, view, pair):
        a = pair[0]
        p = self._cam(view, a)
        q = ("Where is the object at the red point in the camera's frame (x right, y down, z forward)? "
             "Answer x, y, z in metres.")
        return _record("position", q, ", ".join(_num(x) for x in p),
                       [draw_marks(view.image, [(view.mark_pixel(a), "red")])], self._gt(view, a, value=p.tolist()))

    # -- multi view -----------------------------------------------------------------------
    def _two_views(self) -> tuple[View, View]:
        names = list(self.scene.views)
        i, j = self.rng.choice(len(names), 2, replace=False)
        return self.scene.views[names[i]], self.scene.views[names[j]]

    def correspondence(self):
        v1, v2 = self._two_views()
        shared = [k for k in _visible(v1) if k in _visible(v2)]
        others = _visible(v2)
        if not shared or len(others) < 2:
            return None
        a = int(self.rng.choice(shared))
        rest = [k for k in others if k != a]
        candidates = [a] + [int(k) for k in self.rng.choice(rest, min(3, len(rest)), replace=False)]
        colors = [c for c in COLORS if c != "red"][: len(candidates)]
        order = self.rng.permutation(len(candidates))
        marks2 = [(v2.mark_pixel(candidates[o]), colors[n]) for n, o in enumerate(order)]
        answer = colors[int(np.nonzero(order == 0)[0][0])]
        q = (f"The object at the red point in image 1 is which object in image 2: the one at the "
             f"{', '.join(colors[:-1])} or {colors[-1]} point?")
        return _record("correspondence", q, answer,
                       [draw_marks(v1.image, [(v1.mark_pixel(a), "red")]), draw_marks(v2.image, marks2)],
                       {"cameras": [v1.camera, v2.camera], "object": self.scene.objects[a - 1],
                        "candidates": {colors[n]: self.scene.objects[candidates[o] - 1] for n, o in enumerate(order)}},
                       choices=colors)

    def visibility(self):
        v1, v2 = self._two_views()
        names = [readable(n) for n in self.scene.objects]
        unique = [k for k in range(1, len(names) + 1) if names.count(names[k - 1]) == 1]
        if not unique:
            return None
        k = int(self.rng.choice(unique))
        seen = (v1.visible(k) >= MIN_VISIBLE_PIXELS, v2.visible(k) >= MIN_VISIBLE_PIXELS)
        if any(0 < v.visible(k) < MIN_VISIBLE_PIXELS for v in (v1, v2)):
            return None  # a sliver: neither answer would be fair
        answer = {(True, True): "both", (True, False): "image 1", (False, True): "image 2", (False, False): "neither"}[seen]
        q = f"In which image is the {names[k - 1]} visible: image 1, image 2, both or neither?"
        return _record("visibility", q, answer, [v1.image, v2.image],
                       {"cameras": [v1.camera, v2.camera], "object": self.scene.objects[k - 1],
                        "pixels": [v1.visible(k), v2.visible(k)]}, choices=("image 1", "image 2", "both", "neither"))

    def camera_motion(self):
        if self.scene.motion is None:
            return None
        v1, v2, label, translation, yaw = self.scene.motion
        q = "The camera moved between image 1 and image 2. Did it move left, right, up, down, forward or backward, or turn left or right?"
        return _record("camera_motion", q, label, [v1.image, v2.image],
                       {"camera": v1.camera, "translation": list(map(float, translation)), "yaw": float(yaw)}, choices=MOTIONS)

    def _offset_from_gripper(self, k: int) -> np.ndarray:
        """Object k's centre minus the gripper's, in the robot-base frame (x forward, y left, z up)."""
        return self.scene.to_base(self.scene.centers[k - 1]) - self.scene.to_base(self.scene.gripper)

    def _policy_images(self) -> list[np.ndarray]:
        return [self.scene.views["agentview"].image, self.scene.views["robot0_eye_in_hand"].image]

    def _gripper_object(self):
        view = self.scene.views["agentview"]
        vis = _visible(view)
        if not vis:
            return None, None, None
        k = int(self.rng.choice(vis))
        return view, k, self._offset_from_gripper(k)

    def gripper_direction(self):
        view, k, offset = self._gripper_object()
        if view is None or (answer := direction_word(offset)) is None:
            return None
        q = ("In the robot's frame (forward is away from its base), where is the object at the red point relative to "
             "the gripper: in front of, behind, to the left of, to the right of, above or below it?")
        return _record("gripper_direction", q, answer, [draw_marks(view.image, [(view.mark_pixel(k), "red")]),
                                                        self.scene.views["robot0_eye_in_hand"].image],
                       {"object": self.scene.objects[k - 1], "offset_base": offset.round(4).tolist()}, choices=DIRECTIONS)

    def gripper_distance(self):
        view, k, offset = self._gripper_object()
        if view is None:
            return None
        d = float(np.linalg.norm(offset))
        q = "How far is the object at the red point from the gripper, in metres?"
        return _record("gripper_distance", q, _num(d), [draw_marks(view.image, [(view.mark_pixel(k), "red")]),
                                                        self.scene.views["robot0_eye_in_hand"].image],
                       {"object": self.scene.objects[k - 1], "value": d})

    # -- grounding: the instruction's own object and target ---------------------------------
    def _task(self, role: str) -> tuple[str, int]:
        return f'Task: "{self.scene.instruction}".', self.scene.index(self.scene.roles[role])

    def _views_showing(self, k: int) -> list[View]:
        return [self.scene.views[c] for c in WORLD_CAMERAS
                if c in self.scene.views and self.scene.views[c].visible(k) >= MIN_VISIBLE_PIXELS]

    def ground_point(self, role: str):
        task, k = self._task(role)
        views = self._views_showing(k)
        if not views:
            return None
        view = views[self.rng.integers(len(views))]
        mask = view.labels == k
        x, y = point_inside(mask)
        q = f"{task} Where in the image is {ROLE_WORDS[role]}? Point to it: x, y as fractions of the image's width and height."
        return {**_record(f"point_{role}", q, f"{x:.2f}, {y:.2f}", [view.image],
                          {"camera": view.camera, "object": self.scene.objects[k - 1], "pixels": int(mask.sum())}),
                "mask": mask}

    def ground_choose(self, role: str):
        """The referred object among up to 4 marked candidates, other objects of its kind first."""
        task, k = self._task(role)
        views = [v for v in self._views_showing(k) if len(_visible(v)) >= 2]
        if not views:
            return None
        view = views[self.rng.integers(len(views))]
        others = [j for j in _visible(view) if j != k]
        kind = readable(self.scene.objects[k - 1])
        same = [j for j in others if readable(self.scene.objects[j - 1]) == kind]
        rest = [j for j in others if j not in same]
        picks = list(self.rng.permutation(same)) + list(self.rng.permutation(rest))
        candidates = [k] + [int(j) for j in picks[:3]]
        colors = list(COLORS)[: len(candidates)]
        order = self.rng.permutation(len(candidates))
        marks = [(view.mark_pixel(candidates[o]), colors[n]) for n, o in enumerate(order)]
        answer = colors[int(np.nonzero(order == 0)[0][0])]
        q = f"{task} Which coloured point marks {ROLE_WORDS[role]}: the {', '.join(colors[:-1])} or {colors[-1]} one?"
        return _record(f"choose_{role}", q, answer, [draw_marks(view.image, marks)],
                       {"camera": view.camera, "object": self.scene.objects[k - 1],
                        "candidates": {colors[n]: self.scene.objects[candidates[o] - 1] for n, o in enumerate(order)}},
                       choices=colors)

    def ground_position(self, role: str):
        task, k = self._task(role)
        p = self.scene.to_base(self.scene.centers[k - 1])
        q = (f"{task} Where is {ROLE_WORDS[role]} in the robot's base frame (x forward, y left, z up)? "
             "Answer x, y, z in metres.")
        return _record(f"position_{role}", q, ", ".join(_num(x) for x in p), self._policy_images(),
                       {"object": self.scene.objects[k - 1], "value": p.round(4).tolist()})

    def ground_direction(self, role: str):
        """Left or right of the gripper, in the robot's frame: the side is what varies (almost
        everything on the table is in front of and below the hand, so the dominant axis would not)."""
        task, k = self._task(role)
        offset = self._offset_from_gripper(k)
        if abs(offset[1]) < MARGIN["side"]:
            return None
        q = (f"{task} In the robot's frame (forward is away from its base), is {ROLE_WORDS[role]} to the left or "
             "to the right of the gripper?")
        return _record(f"direction_{role}", q, "left" if offset[1] > 0 else "right", self._policy_images(),
                       {"object": self.scene.objects[k - 1], "offset_base": offset.round(4).tolist()},
                       choices=("left", "right"))

    def ground_distance(self, role: str):
        task, k = self._task(role)
        d = float(np.linalg.norm(self._offset_from_gripper(k)))
        q = f"{task} How far is {ROLE_WORDS[role]} from the gripper, in metres?"
        return _record(f"distance_{role}", q, _num(d), self._policy_images(),
                       {"object": self.scene.objects[k - 1], "value": d})


def direction_word(offset: np.ndarray) -> str | None:
    """The dominant direction of a robot-base-frame offset, or None when no axis clearly dominates
    (the largest component under 5 cm or under 1.5x the second)."""
    order = np.argsort(-np.abs(offset))
    if abs(offset[order[0]]) < 0.05 or abs(offset[order[0]]) < 1.5 * abs(offset[order[1]]):
        return None
    axis = int(order[0])
    return [("behind", "in front of"), ("to the right of", "to the left of"), ("below", "above")][axis][int(offset[axis] > 0)]


def point_inside(mask: np.ndarray) -> tuple[float, float]:
    """Normalised (x, y), written with 2 decimals, that lands inside the mask: the mask pixel nearest
    its centroid whose rounded coordinates still fall on the mask."""
    vs, us = np.nonzero(mask)
    h, w = mask.shape
    for j in np.argsort((us - us.mean()) ** 2 + (vs - vs.mean()) ** 2):
        x, y = round((us[j] + 0.5) / w, 2), round((vs[j] + 0.5) / h, 2)
        if point_in_mask(f"{x:.2f}, {y:.2f}", mask):
            return x, y
    raise ValueError("no pixel of the mask survives rounding to 2 decimals")


def point_in_mask(prediction: str, mask: np.ndarray) -> bool:
    nums = parse_numbers(prediction)
    if len(nums) < 2:
        return False
    h, w = mask.shape
    x, y = nums[:2]
    if not (0 <= x <= 1 and 0 <= y <= 1):
        return False
    return bool(mask[min(int(y * h), h - 1), min(int(x * w), w - 1)])


def scene_questions(scene: Scene, rng: np.random.Generator, task_types=TASK_TYPES) -> list[dict]:
    maker = QuestionMaker(scene, rng)
    return [r for r in (maker.make(t) for t in task_types) if r is not None]


# -- scoring ------------------------------------------------------------------------------
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


def parse_numbers(text: str) -> list[float]:
    return [float(x) for x in _NUMBER.findall(text)]


def _mra(relative_error: float) -> float:
    return float(np.mean([relative_error < 1 - t for t in np.arange(0.50, 0.951, 0.05)]))


def mean_relative_accuracy(pred: float, truth: float) -> float:
    """SPAR/VSI-Bench MRA: the share of thresholds 0.50, 0.55, ..., 0.95 at which the relative
    error |pred - truth| / |truth| stays below 1 - threshold."""
    return _mra(abs(pred - truth) / max(abs(truth), 1e-6))


def score(task_type: str, prediction: str, answer: str, mask: np.ndarray | None = None) -> float:
    """1/0 for a multiple-choice answer, MRA in [0, 1] for a numeric one (a vector by its relative
    Euclidean error; a base-frame position by its absolute error under 1, 2, ..., 10 cm), 1/0 for
    a point by whether it lands inside the object's mask. An unparseable numeric prediction or
    point scores 0."""
    if task_type in POINTING:
        if mask is None:
            raise ValueError(f"a {task_type} answer is scored against the object's mask; none was given")
        return float(point_in_mask(prediction, mask))
    if task_type in NUMERIC:
        truth, pred = np.array(parse_numbers(answer)), np.array(parse_numbers(prediction))
        if len(pred) < len(truth):
            return 0.0
        error = np.linalg.norm(pred[: len(truth)] - truth)
        if task_type in ABSOLUTE:
            return float(np.mean([error < t for t in np.arange(0.01, 0.101, 0.01)]))
        return _mra(error / max(np.linalg.norm(truth), 1e-6))
    return float(prediction.strip().lower().rstrip(".") == answer.lower())

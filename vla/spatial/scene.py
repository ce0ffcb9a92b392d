"""A snapshot of a LIBERO scene from several cameras with its exact 3D ground truth, the raw
material of the spatial questions. Images are rendered straight from the simulator state the
ground truth is read from (no observation lag)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from envs import ground_truth as gt

# Cameras attached to the world (agentview, frontview, sideview, birdview) plus the wrist camera:
# the multi-view questions pair any two of them.
SPATIAL_CAMERAS = ("agentview", "frontview", "sideview", "birdview", "robot0_eye_in_hand")
MIN_VISIBLE_PIXELS = 12  # an object covering fewer pixels counts as not visible in that view


@dataclass
class View:
    camera: str
    image: np.ndarray  # uint8 [H, W, 3], upright
    labels: np.ndarray  # int32 [H, W]: 0 background, k = objects[k - 1] (segmentation)
    pose: np.ndarray  # 4x4 world-from-camera, OpenCV axes (x right, y down, z forward)
    K: np.ndarray  # 3x3 intrinsics

    def visible(self, k: int) -> int:
        """Pixels of object k (1-based) in this view."""
        return int((self.labels == k).sum())

    def mark_pixel(self, k: int) -> tuple[int, int]:
        """(u, v) of the object's visible pixel nearest its mask centroid: a mark there is on the object."""
        vs, us = np.nonzero(self.labels == k)
        cu, cv = us.mean(), vs.mean()
        j = int(np.argmin((us - cu) ** 2 + (vs - cv) ** 2))
        return int(us[j]), int(vs[j])

    def to_camera(self, points_world: np.ndarray) -> np.ndarray:
        return (np.asarray(points_world) - self.pose[:3, 3]) @ self.pose[:3, :3]


@dataclass
class Scene:
    suite: str
    task_index: int
    seed: int
    objects: list[str]  # LIBERO object names (movable objects and fixtures)
    centers: np.ndarray  # [n, 3] world-frame bounding-box centres
    gripper: np.ndarray  # [3] world position of the gripper's grip site
    base_pose: np.ndarray  # 4x4 world-from-robot-base (x forward, y left, z up)
    views: dict[str, View] = field(default_factory=dict)
    motion: tuple | None = None  # (view before, view after, label, translation, yaw): add_camera_motion
    instruction: str = ""
    # what the instruction refers to, by the task's one-predicate BDDL goal: "object" (its first
    # argument) and, for on/in goals, "target" (its place; a fixture's region counts as the fixture)
    roles: dict[str, str] = field(default_factory=dict)

    def index(self, name: str) -> int:
        """The 1-based segmentation label of an object."""
        return self.objects.index(name) + 1

    def to_base(self, points_world: np.ndarray) -> np.ndarray:
        """World points in the robot-base frame (as View.to_camera for a camera)."""
        return (np.asarray(points_world) - self.base_pose[:3, 3]) @ self.base_pose[:3, :3]


def goal_roles(goal: list[str], objects: list[str]) -> dict[str, str]:
    """{"object": name[, "target": name]} of one BDDL goal predicate, e.g. ['on', 'akita_black_bowl_1',
    'plate_1'] or ['in', 'bowl_1', 'wooden_cabinet_1_top_region'] (-> target 'wooden_cabinet_1')."""
    def resolve(name: str) -> str | None:
        if name in objects:
            return name
        owners = [o for o in objects if name.startswith(o + "_")]
        return max(owners, key=len) if owners else None

    resolved = {role: resolve(arg) for role, arg in zip(("object", "target"), goal[1:3])}
    return {role: name for role, name in resolved.items() if name is not None}


def render_view(env, camera: str, resolution: int) -> View:
    image = env.sim.render(camera_name=camera, width=resolution, height=resolution)[::-1]
    labels, _ = gt.render_segmentation(env, camera, resolution, resolution)
    return View(camera, np.ascontiguousarray(image), labels, gt.camera_pose(env, camera),
                gt.camera_intrinsics(env, camera, resolution, resolution))


def randomize(env, rng: np.random.Generator, joint_noise: float = 0.3, settle_substeps: int = 250) -> None:
    """A fresh object layout from LIBERO's own placement sampler (a soft reset: no model rebuild),
    settled by physics, then a random arm pose and gripper opening set kinematically."""
    rs = env.robosuite_env
    rs.hard_reset = False  # keep the compiled model: re-sampling placements takes 0.15 s, a rebuild 4 s
    env._env.seed(int(rng.integers(2**31)))  # LIBERO's placement sampler draws from numpy's global RNG
    rs.reset()
    for _ in range(settle_substeps):
        rs.sim.step()
    robot = rs.robots[0]
    qpos = rs.sim.data.qpos
    qpos[robot._ref_joint_pos_indexes] += rng.uniform(-joint_noise, joint_noise, len(robot._ref_joint_pos_indexes))
    grip = robot._ref_gripper_joint_pos_indexes
    qpos[grip] = rng.uniform(0.0, 0.04) * np.array([1.0, -1.0])[: len(grip)]
    rs.sim.forward()


def capture(env, suite: str, task_index: int, seed: int, resolution: int, cameras=SPATIAL_CAMERAS) -> Scene:
    rs = env.robosuite_env
    objects = gt.object_names(env)
    centers = np.stack([gt.object_info(env, n).center for n in objects])
    gripper = np.array(rs.sim.data.site_xpos[rs.robots[0].eef_site_id])
    base = rs.sim.model.body_name2id(rs.robots[0].robot_model.root_body)
    base_pose = np.eye(4)
    base_pose[:3, :3] = rs.sim.data.body_xmat[base].reshape(3, 3)
    base_pose[:3, 3] = rs.sim.data.body_xpos[base]
    goals = rs.parsed_problem["goal_state"]
    # a chained goal ("put both the soup and the sauce in the basket") has no single referred object
    roles = goal_roles(goals[0], objects) if len(goals) == 1 else {}
    scene = Scene(suite, task_index, seed, objects, centers, gripper, base_pose, instruction=env.task.instruction,
                  roles=roles)
    for c in cameras:
        scene.views[c] = render_view(env, c, resolution)
    return scene


def moved_camera_view(env, camera: str, resolution: int, translation=np.zeros(3), yaw: float = 0.0) -> View:
    """The view of a world-attached camera moved by `translation` (metres, in its own OpenCV frame)
    and turned by `yaw` radians about its up axis (positive: towards its left); the model is
    restored afterwards."""
    import mujoco

    model, data = env.sim.model._model, env.sim.data._data
    cid = gt._camera_id(env, camera)
    if model.cam_bodyid[cid] != 0:
        raise ValueError(f"camera {camera!r} is attached to a moving body; pick a world camera")
    pos, quat = model.cam_pos[cid].copy(), model.cam_quat[cid].copy()
    try:
        world_from_cam = gt.camera_pose(env, camera)[:3, :3]
        model.cam_pos[cid] = pos + world_from_cam @ np.asarray(translation, float)
        # MuJoCo camera axes: x right, y up, z backwards; turning left is a positive rotation about +y
        turn = np.zeros(4)
        mujoco.mju_axisAngle2Quat(turn, np.array([0.0, 1.0, 0.0]), yaw)
        out = np.zeros(4)
        mujoco.mju_mulQuat(out, quat, turn)
        model.cam_quat[cid] = out
        mujoco.mj_kinematics(model, data)
        mujoco.mj_camlight(model, data)
        return render_view(env, camera, resolution)
    finally:
        model.cam_pos[cid], model.cam_quat[cid] = pos, quat
        mujoco.mj_kinematics(model, data)
        mujoco.mj_camlight(model, data)


# OpenCV-frame translation direction of each camera motion label (turns are about the up axis).
MOTION_DIRECTIONS = {"left": (-1, 0, 0), "right": (1, 0, 0), "up": (0, -1, 0), "down": (0, 1, 0),
                     "forward": (0, 0, 1), "backward": (0, 0, -1)}


def add_camera_motion(env, scene: Scene, rng: np.random.Generator, resolution: int) -> None:
    """scene.motion = (view before, view after, label, translation, yaw) for a world camera moved
    10-20 cm along one of its axes or turned 10-20 degrees."""
    camera = str(rng.choice(["agentview", "frontview", "sideview"]))
    label = str(rng.choice(list(MOTION_DIRECTIONS) + ["turned left", "turned right"]))
    translation, yaw = np.zeros(3), 0.0
    if label in MOTION_DIRECTIONS:
        translation = np.array(MOTION_DIRECTIONS[label], float) * rng.uniform(0.10, 0.20)
    else:
        yaw = np.deg2rad(rng.uniform(10, 20)) * (1 if label == "turned left" else -1)
    before = scene.views[camera] if camera in scene.views else render_view(env, camera, resolution)
    after = moved_camera_view(env, camera, resolution, translation, yaw)
    scene.motion = (before, after, label, translation, yaw)

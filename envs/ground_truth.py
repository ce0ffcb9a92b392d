"""The simulator's 3D ground truth: object poses and extents, cameras, depth, segmentation.

All positions are metres in the world frame unless a name says otherwise. Cameras follow the
OpenCV convention (x right, y down, z forward) and images are upright, as in the observations.
Scripted experts and spatial question generation both read the scene through this module.
"""

from __future__ import annotations

from dataclasses import dataclass

import mujoco
import numpy as np


@dataclass(frozen=True)
class ObjectInfo:
    name: str
    position: np.ndarray  # body origin, world
    quat_wxyz: np.ndarray
    aabb_min: np.ndarray  # world-frame bounding box of the collision geoms
    aabb_max: np.ndarray
    is_fixture: bool

    @property
    def center(self) -> np.ndarray:
        return (self.aabb_min + self.aabb_max) / 2

    @property
    def size(self) -> np.ndarray:
        return self.aabb_max - self.aabb_min


def _subtree_geoms(model, body_id: int) -> np.ndarray:
    """Ids of the geoms on `body_id` and every body below it."""
    in_tree = np.zeros(model.nbody, bool)
    in_tree[body_id] = True
    for b in range(body_id + 1, model.nbody):  # MuJoCo orders bodies parent-first
        in_tree[b] = in_tree[model.body_parentid[b]]
    return np.flatnonzero(in_tree[model.geom_bodyid])


def _shape_geoms(model, body_id: int) -> np.ndarray:
    """The subtree's geoms that describe its shape: without the decimated render twins of
    render_quality="lowpoly" (envs/lowpoly.py), so the ground truth is the same at every setting."""
    from .lowpoly import TWIN_SUFFIX

    geoms = _subtree_geoms(model, body_id)
    names = [mujoco.mj_id2name(model, mujoco.mjtObj.mjOBJ_GEOM, int(g)) or "" for g in geoms]
    return geoms[[not n.endswith(TWIN_SUFFIX) for n in names]]


def _geom_corners(model, data, geoms: np.ndarray) -> np.ndarray:
    """World coordinates of the 8 corners of each geom's local bounding box, [n*8, 3]."""
    signs = np.array([[x, y, z] for x in (-1, 1) for y in (-1, 1) for z in (-1, 1)], float)
    out = []
    for g in geoms:
        center, half = model.geom_aabb[g, :3], model.geom_aabb[g, 3:]
        local = center + signs * half
        out.append(data.geom_xpos[g] + local @ data.geom_xmat[g].reshape(3, 3).T)
    return np.concatenate(out) if out else np.zeros((0, 3))


@dataclass(frozen=True)
class Boxes:
    """Oriented boxes: centres [n, 3], rotations (box-to-world) [n, 3, 3], half sizes [n, 3]."""

    centers: np.ndarray
    rotations: np.ndarray
    half_sizes: np.ndarray

    def distance(self, points: np.ndarray) -> np.ndarray:
        """Euclidean distance [m, n] from each point [m, 3] to each box (0 inside)."""
        local = np.einsum("nji,mnj->mni", self.rotations, points[:, None, :] - self.centers[None])
        return np.linalg.norm(np.maximum(np.abs(local) - self.half_sizes, 0), axis=-1)

    def __getitem__(self, keep) -> "Boxes":
        return Boxes(self.centers[keep], self.rotations[keep], self.half_sizes[keep])

    def moved(self, offset) -> "Boxes":
        """The same boxes translated by `offset` (world)."""
        return Boxes(self.centers + np.asarray(offset, float), self.rotations, self.half_sizes)

    def corners(self) -> np.ndarray:
        """Every box's 8 corners and its centre [9n, 3]: a point sample of the shapes' outline."""
        signs = np.array([[x, y, z] for x in (-1, 1) for y in (-1, 1) for z in (-1, 1)], float)
        local = signs[None] * self.half_sizes[:, None]
        pts = self.centers[:, None] + np.einsum("nij,nkj->nki", self.rotations, local)
        return np.concatenate([pts.reshape(-1, 3), self.centers])

    def extent_along(self, direction) -> np.ndarray:
        """How far each box reaches along a world direction [n] (its support value)."""
        d = np.asarray(direction, float)
        return self.centers @ d + np.abs(np.einsum("nij,i->nj", self.rotations, d) * self.half_sizes).sum(1)


def narrowest_direction(xy: np.ndarray) -> np.ndarray:
    """Unit xy direction of least spread of 2-D points (smallest principal axis)."""
    xy = xy - xy.mean(0)
    return np.linalg.eigh(xy.T @ xy)[1][:, 0]


def _boxes(model, data, geoms: np.ndarray) -> Boxes:
    rot = data.geom_xmat[geoms].reshape(-1, 3, 3)
    centers = data.geom_xpos[geoms] + np.einsum("nij,nj->ni", rot, model.geom_aabb[geoms, :3])
    return Boxes(centers, rot, model.geom_aabb[geoms, 3:].copy())


def _collision(model) -> np.ndarray:
    return (model.geom_contype != 0) | (model.geom_conaffinity != 0)


def obstacle_boxes(env, exclude: tuple[str, ...] = ()) -> Boxes:
    """The collision geoms of the task's objects and fixtures as oriented boxes, except those of
    the objects named in `exclude`. The robot and the arena (table, floor, walls) are left out:
    paths run above the table, and its top would otherwise bound every clearance alike."""
    model, data = env.sim.model._model, env.sim.data._data
    keep = np.zeros(model.ngeom, bool)
    for name, body in env.robosuite_env.obj_body_id.items():
        if name not in exclude:
            keep[_subtree_geoms(model, body)] = True
    return _boxes(model, data, np.flatnonzero(keep & _collision(model)))


@dataclass(frozen=True)
class JointInfo:
    name: str
    qpos: float
    anchor: np.ndarray  # a point on the axis, world
    axis: np.ndarray  # unit direction, world
    boxes: Boxes  # the collision geoms that move with the joint (a knob, a drawer)


def joint_info(env, joint: str) -> JointInfo:
    import mujoco

    model, data = env.sim.model._model, env.sim.data._data
    jid = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_JOINT, joint)
    if jid < 0:
        raise ValueError(f"unknown joint {joint!r}")
    geoms = _subtree_geoms(model, model.jnt_bodyid[jid])
    return JointInfo(joint, float(data.qpos[model.jnt_qposadr[jid]]), np.array(data.xanchor[jid]),
                     np.array(data.xaxis[jid]), _boxes(model, data, geoms[_collision(model)[geoms]]))


def object_names(env) -> list[str]:
    """Names of the task's objects and fixtures (LIBERO's names, e.g. 'akita_black_bowl_1')."""
    return list(env.robosuite_env.obj_body_id)


def object_info(env, name: str) -> ObjectInfo:
    rs = env.robosuite_env
    if name not in rs.obj_body_id:
        raise ValueError(f"unknown object {name!r}; this scene has {sorted(rs.obj_body_id)}")
    model, data = env.sim.model._model, env.sim.data._data
    body = rs.obj_body_id[name]
    geoms = _shape_geoms(model, body)
    collision = geoms[_collision(model)[geoms]]
    corners = _geom_corners(model, data, collision if len(collision) else geoms)
    pos = np.array(data.xpos[body])
    lo, hi = (corners.min(0), corners.max(0)) if len(corners) else (pos, pos)
    return ObjectInfo(name, pos, np.array(data.xquat[body]), lo, hi, name in rs.fixtures_dict)


def bodies_touching(env, name: str) -> set[str]:
    """Names of the bodies in contact with an object (any geom of its subtree) right now."""
    model, data = env.sim.model._model, env.sim.data._data
    mine = np.zeros(model.ngeom, bool)
    mine[_subtree_geoms(model, env.robosuite_env.obj_body_id[name])] = True
    out = set()
    for c in data.contact[:data.ncon]:
        for a, b in ((c.geom1, c.geom2), (c.geom2, c.geom1)):
            if mine[a] and not mine[b]:
                out.add(mujoco.mj_id2name(model, mujoco.mjtObj.mjOBJ_BODY, int(model.geom_bodyid[b])) or "")
    return out


def hand_points(env) -> np.ndarray:
    """The robot's hand without its fingers, as points [n, 3] in the end effector's frame
    (robot0_eef_pos / robot0_eef_quat): the vertices of its collision meshes (a box's corners),
    to check a planned hand pose against the scene's boxes."""
    from robosuite.utils import transform_utils as T

    model, data = env.sim.model._model, env.sim.data._data
    R, eef = T.quat2mat(env.raw_obs["robot0_eef_quat"]), np.asarray(env.raw_obs["robot0_eef_pos"])
    out = []
    for g in np.flatnonzero(_collision(model)):
        body = mujoco.mj_id2name(model, mujoco.mjtObj.mjOBJ_BODY, int(model.geom_bodyid[g])) or ""
        if not body.startswith("gripper0_") or "finger" in body:
            continue
        if model.geom_type[g] == mujoco.mjtGeom.mjGEOM_MESH:
            mesh = model.geom_dataid[g]
            local = model.mesh_vert[model.mesh_vertadr[mesh]:model.mesh_vertadr[mesh] + model.mesh_vertnum[mesh]]
            world = data.geom_xpos[g] + local @ data.geom_xmat[g].reshape(3, 3).T
        else:
            world = _geom_corners(model, data, np.array([g]))
        out.append((world - eef) @ R)
    return np.concatenate(out) if out else np.zeros((0, 3))


def narrow_axis(env, name: str) -> np.ndarray:
    """Unit xy direction across which an object is narrowest (principal axes of its footprint)."""
    rs = env.robosuite_env
    model, data = env.sim.model._model, env.sim.data._data
    geoms = _shape_geoms(model, rs.obj_body_id[name])
    return narrowest_direction(_geom_corners(model, data, geoms)[:, :2])


def object_boxes(env, name: str) -> Boxes:
    """An object's collision shape as oriented boxes (its parts: body, handle, spout...)."""
    model, data = env.sim.model._model, env.sim.data._data
    geoms = _shape_geoms(model, env.robosuite_env.obj_body_id[name])
    return _boxes(model, data, geoms[_collision(model)[geoms]])


def all_objects(env) -> dict[str, ObjectInfo]:
    return {n: object_info(env, n) for n in object_names(env)}


def site_position(env, site: str) -> np.ndarray:
    """World position of a named site, e.g. a BDDL region such as 'basket_1_contain_region'."""
    model = env.sim.model._model
    import mujoco

    sid = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_SITE, site)
    if sid < 0:
        raise ValueError(f"unknown site {site!r}")
    return np.array(env.sim.data._data.site_xpos[sid])


def site_rotation(env, site: str) -> np.ndarray:
    """World orientation (3 x 3, site-to-world) of a named site: a region's box axes."""
    site_position(env, site)  # names an unknown site
    model = env.sim.model._model
    return np.array(env.sim.data._data.site_xmat[model.site(site).id]).reshape(3, 3)


def body_position(env, body: str) -> np.ndarray:
    import mujoco

    bid = mujoco.mj_name2id(env.sim.model._model, mujoco.mjtObj.mjOBJ_BODY, body)
    if bid < 0:
        raise ValueError(f"unknown body {body!r}")
    return np.array(env.sim.data._data.xpos[bid])


# -- cameras -------------------------------------------------------------------------------
def _camera_id(env, camera: str) -> int:
    names = list(env.sim.model.camera_names)
    if camera not in names:
        raise ValueError(f"unknown camera {camera!r}; this scene has {names}")
    return names.index(camera)


def camera_intrinsics(env, camera: str, height: int, width: int) -> np.ndarray:
    """3x3 pinhole matrix K for an upright image of the given size."""
    fovy = env.sim.model.cam_fovy[_camera_id(env, camera)]
    f = 0.5 * height / np.tan(np.deg2rad(fovy) / 2)
    return np.array([[f, 0, width / 2], [0, f, height / 2], [0, 0, 1.0]])


def camera_pose(env, camera: str) -> np.ndarray:
    """4x4 world-from-camera transform, OpenCV axes (MuJoCo cameras look down -z with y up)."""
    cid = _camera_id(env, camera)
    pose = np.eye(4)
    pose[:3, :3] = env.sim.data.cam_xmat[cid].reshape(3, 3) @ np.diag([1.0, -1.0, -1.0])
    pose[:3, 3] = env.sim.data.cam_xpos[cid]
    return pose


def world_to_camera(env, camera: str, points: np.ndarray) -> np.ndarray:
    """Points [..., 3] in the world frame -> the camera frame (z = depth along the view axis)."""
    pose = camera_pose(env, camera)
    return (np.asarray(points) - pose[:3, 3]) @ pose[:3, :3]


def project(env, camera: str, points: np.ndarray, height: int, width: int) -> np.ndarray:
    """Pixel coordinates (u right, v down) [..., 2] of world points in an upright image."""
    cam = world_to_camera(env, camera, points)
    uvw = cam @ camera_intrinsics(env, camera, height, width).T
    return uvw[..., :2] / uvw[..., 2:3]


def render_depth(env, camera: str, height: int, width: int) -> np.ndarray:
    """Metric depth (metres along the view axis) [H, W] float32, upright."""
    _, depth = env.sim.render(camera_name=camera, height=height, width=width, depth=True)
    extent = env.sim.model.stat.extent
    near, far = env.sim.model.vis.map.znear * extent, env.sim.model.vis.map.zfar * extent
    return (near / (1.0 - depth * (1.0 - near / far)))[::-1].astype(np.float32)


def render_segmentation(env, camera: str, height: int, width: int) -> tuple[np.ndarray, list[str]]:
    """Instance segmentation [H, W] int32 (0 = background/robot/table, k = names[k-1]), upright."""
    seg = env.sim.render(camera_name=camera, height=height, width=width, segmentation=True)[::-1]
    geom_ids = seg[..., 1].astype(np.int64)
    is_geom = seg[..., 0] == 5  # mjOBJ_GEOM
    names = object_names(env)
    model = env.sim.model._model
    owner = np.zeros(model.ngeom + 1, np.int32)
    for k, name in enumerate(names, start=1):
        owner[_subtree_geoms(model, env.robosuite_env.obj_body_id[name])] = k
    labels = np.where(is_geom & (geom_ids >= 0), owner[np.clip(geom_ids, 0, model.ngeom)], 0)
    return labels.astype(np.int32), names

"""Perturbed episodes, the seven axes LIBERO-Plus (arXiv 2510.13626) measures robustness on:
camera viewpoint, robot initial state, language, light, background, sensor noise, object layout.

A `Perturbation` is drawn from (axis, level, task, episode) alone, so an episode is the same
perturbed scene in every run, on every worker, for the policy and for the scripted expert (which
reads the perturbed simulator). Its `params` are plain numbers, recorded in episodes.jsonl.
`LiberoEnv(perturbation=...)` applies it: the scene ones at reset (camera, robot, light,
background, layout), the observation ones on every observation (noise, language).

Levels 1-5 are explicit magnitudes of our own, set from what LIBERO-Plus's benchmark files hold
(its levels are empirical difficulty labels; docs/evaluation.md, "Robustness"):
  camera      the agentview camera only (the wrist camera is part of the arm): one of four moves,
              orbit about the vertical through (0, 0, 0.8) m by 15(L-1)..15L degrees, the same
              orbit raised 15 degrees, distance x 1+0.2(L-1)..1+0.2L from that point, or the look
              turned 2(L-1)..2L degrees in yaw and pitch
  robot       the 7 arm joints offset along a random direction, 0.1 L rad in norm (LIBERO-Plus's)
  language    envs.language.rewrite at level L with the held-out ("eval") word set
  light       both lights: intensity x (1 +- 0.15 L), direction tilted 10 L degrees, colour
              tinted +- 0.06 L per channel
  background  textures of the installed LIBERO set (envs.perturb.TEXTURES): L1 table tinted,
              L2 table retextured, L3 wall retextured, L4 table and wall, L5 table, wall and floor
  noise       the agentview image: Gaussian noise (sigma 0.03 L), Gaussian blur (sigma 0.4 L px
              at 128 px), motion blur (2 L + 1 px) or fog (0.12 L), one kind per episode, fresh
              noise every frame
  layout      every loose object moved 1.2(L-1)..1.2L cm in a random direction on the table
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np

AXES = ("camera", "robot", "language", "light", "background", "noise", "layout")
LEVELS = (1, 2, 3, 4, 5)
CAMERA_PIVOT = np.array([0.0, 0.0, 0.8])  # LIBERO-Plus's: the table centre, 0.8 m up
PERTURBED_CAMERA = "agentview"
# held-out split of the installed LIBERO textures (assets/textures): evaluation draws "eval",
# training randomisation "train"; the scenes' own textures are in neither
TEXTURES = {
    "train": ["brown_ceramic_tile", "dark_blue_wall", "dark_floor_texture", "gray_ceramic_tile", "kona_gotham",
              "marble_floor", "rustic_floor", "stucco_wall", "yellow_linen_wall_texture", "gray_floor", "light_floor",
              "gray_plaster", "white_wall", "light-gray-floor-tile", "new_light_gray_plaster"],
    "eval": ["capriccio_sky", "ceramic", "cream-plaster", "dark_green_plaster_wall", "grigia_caldera_porcelain_floor",
             "light_blue_wall", "meeka-beige-plaster", "dapper_gray_floor", "table_light_wood", "gray_wall",
             "light_gray_plaster", "dark_gray_plaster"],
}
NOISE_KINDS = ("gaussian", "blur", "motion", "fog")


@dataclass(frozen=True)
class Perturbation:
    axis: str
    level: int
    params: dict = field(default_factory=dict, compare=False)
    seed: int = 0  # the episode's own stream (per-frame noise draws from it)

    def record(self) -> dict:
        return {"axis": self.axis, "level": self.level, **self.params}


def parse(spec) -> list[tuple[str, int]]:
    """eval.perturb: "camera:3" (one level), "camera" (levels 1-5), "all" (every axis at every
    level), or a list of those ([camera:1,noise:5] on hydra's command line; "camera:1,noise:5" in
    Python); None or "" for none. Unknown axes or levels are named."""
    if not spec:
        return []
    parts = [str(x) for x in spec] if not isinstance(spec, str) else spec.split(",")
    out = []
    for part in parts:
        name, _, level = part.strip().partition(":")
        axes = AXES if name == "all" else (name,)
        if name != "all" and name not in AXES:
            raise ValueError(f"unknown perturbation axis {name!r} in {spec!r}; axes: {', '.join(AXES)} (or all)")
        if level and (not level.isdigit() or int(level) not in LEVELS):
            raise ValueError(f"unknown perturbation level {level!r} in {spec!r}; levels: 1-5")
        out += [(a, int(level)) if level else (a, lv) for a in axes for lv in ((int(level),) if level else LEVELS)]
    return out


def draw(axis: str, level: int, task: int, episode: int, instruction: str = "") -> Perturbation:
    """The perturbation of episode `episode` of task `task`, the same every time."""
    if axis not in AXES:
        raise ValueError(f"unknown perturbation axis {axis!r}; axes: {', '.join(AXES)}")
    if level not in LEVELS:
        raise ValueError(f"unknown perturbation level {level!r}; levels: 1-5")
    seed = int.from_bytes(hashlib.sha256(f"{axis}/{level}/{task}/{episode}".encode()).digest()[:8], "little")
    rng = np.random.default_rng(seed)
    band = lambda step: float(rng.uniform(step * (level - 1), step * level))  # this level's magnitude band
    sign = lambda: float(rng.choice([-1.0, 1.0]))
    if axis == "camera":
        kind = str(rng.choice(["orbit", "orbit_raised", "distance", "look"]))
        p = {"kind": kind, "azimuth_deg": 0.0, "elevation_deg": 0.0, "distance_scale": 1.0, "yaw_deg": 0.0, "pitch_deg": 0.0}
        if kind.startswith("orbit"):
            p["azimuth_deg"] = sign() * band(15.0)
            p["elevation_deg"] = 15.0 if kind == "orbit_raised" else 0.0
        elif kind == "distance":
            p["distance_scale"] = 1.0 + band(0.2)
        else:
            p["yaw_deg"], p["pitch_deg"] = sign() * band(2.0), sign() * band(2.0)
    elif axis == "robot":
        direction = rng.normal(size=7)
        p = {"joint_offsets": (0.1 * level * direction / np.linalg.norm(direction)).round(6).tolist()}
    elif axis == "language":
        from .language import rewrite

        if not instruction:
            raise ValueError("the language axis rewrites the task's instruction: pass instruction=")
        p = {"instruction": rewrite(instruction, level, "eval", rng)}
    elif axis == "light":
        p = {"intensity": [1.0 + sign() * band(0.15) for _ in range(2)],
             "tilt_deg": [band(10.0) for _ in range(2)], "tilt_azimuth_deg": rng.uniform(0, 360, 2).round(3).tolist(),
             "tint": rng.uniform(-0.06 * level, 0.06 * level, 3).round(4).tolist()}
    elif axis == "background":
        surfaces = {1: [], 2: ["table"], 3: ["wall"], 4: ["table", "wall"], 5: ["table", "wall", "floor"]}[level]
        p = {"tint": rng.uniform(-0.25, 0.25, 3).round(4).tolist() if level == 1 else None,
             "textures": {s: str(rng.choice(TEXTURES["eval"])) for s in surfaces}}
    elif axis == "noise":
        p = {"kind": str(rng.choice(NOISE_KINDS)), "angle_deg": float(rng.uniform(0, 180))}
    else:  # layout
        p = {"shift_cm": [band(1.2) for _ in range(16)], "direction_deg": rng.uniform(0, 360, 16).round(3).tolist()}
    return Perturbation(axis, level, _rounded(p), seed)


def _rounded(p):
    if isinstance(p, float):
        return round(p, 4)
    if isinstance(p, dict):
        return {k: _rounded(v) for k, v in p.items()}
    if isinstance(p, list):
        return [_rounded(v) for v in p]
    return p


# -- the scene: applied by LiberoEnv at reset ------------------------------------------------------
def _rotation(axis: np.ndarray, degrees: float) -> np.ndarray:
    from scipy.spatial.transform import Rotation

    return Rotation.from_rotvec(np.radians(degrees) * np.asarray(axis, float)).as_matrix()


def camera_pose(pos: np.ndarray, quat_wxyz: np.ndarray, p: dict) -> tuple[np.ndarray, np.ndarray]:
    """The camera's new world pose (MuJoCo's wxyz quaternion) for a camera move's params."""
    from scipy.spatial.transform import Rotation

    rot = Rotation.from_quat(np.roll(quat_wxyz, -1)).as_matrix()  # scipy is xyzw
    world = _rotation([0, 0, 1], p["azimuth_deg"]) @ _rotation([0, -1, 0], p["elevation_deg"])
    pos = CAMERA_PIVOT + p["distance_scale"] * (world @ (np.asarray(pos) - CAMERA_PIVOT))
    # the look turns about the camera's own axes (MuJoCo: x right, y up, looking along -z)
    rot = world @ rot @ _rotation([0, 1, 0], p["yaw_deg"]) @ _rotation([1, 0, 0], p["pitch_deg"])
    return pos, np.roll(Rotation.from_matrix(rot).as_quat(), 1)


def light_settings(pos, direction, diffuse, p: dict):
    """(direction, diffuse) of each light for a light perturbation's params."""
    dirs, diffs = [], []
    for i in range(len(direction)):
        j = i % len(p["intensity"])
        d = np.asarray(direction[i], float)
        az = np.radians(p["tilt_azimuth_deg"][j])
        tilt_axis = np.cross(d, [np.cos(az), np.sin(az), 0.0])
        if np.linalg.norm(tilt_axis) > 1e-9:
            d = _rotation(tilt_axis / np.linalg.norm(tilt_axis), p["tilt_deg"][j]) @ d
        dirs.append(d / np.linalg.norm(d))
        diffs.append(np.clip(np.asarray(diffuse[i]) * p["intensity"][j] * (1 + np.asarray(p["tint"])), 0, 1))
    return np.array(dirs), np.array(diffs)


def layout_shifts(n: int, p: dict) -> np.ndarray:
    """xy shifts (m) of n loose objects for a layout perturbation's params."""
    k = np.arange(n) % len(p["shift_cm"])
    r = np.asarray(p["shift_cm"])[k] / 100
    a = np.radians(np.asarray(p["direction_deg"])[k])
    return np.stack([r * np.cos(a), r * np.sin(a)], axis=1)


# -- the observation: applied to every frame -------------------------------------------------------
def noisy_image(img: np.ndarray, p: Perturbation, frame: int) -> np.ndarray:
    """The image as a corrupted sensor gives it: one kind per episode, fresh noise per frame."""
    from scipy import ndimage

    rng = np.random.default_rng([p.seed, frame])
    x = img.astype(np.float32) / 255
    scale = img.shape[0] / 128  # magnitudes are set for 128 px images
    kind, level = p.params["kind"], p.level
    if kind == "gaussian":
        x = x + rng.normal(0, 0.03 * level, x.shape)
    elif kind == "blur":
        x = ndimage.gaussian_filter(x, sigma=(0.4 * level * scale, 0.4 * level * scale, 0))
    elif kind == "motion":
        length = max(3, int(round((2 * level + 1) * scale)))
        kernel = np.zeros((length, length), np.float32)
        kernel[length // 2, :] = 1
        kernel = ndimage.rotate(kernel, p.params["angle_deg"], reshape=False, order=1)
        kernel /= kernel.sum()
        x = np.stack([ndimage.convolve(x[..., c], kernel, mode="nearest") for c in range(3)], axis=-1)
    else:  # fog: a smooth random veil
        field = ndimage.gaussian_filter(rng.random(img.shape[:2]).astype(np.float32), sigma=img.shape[0] / 8)
        field = (field - field.min()) / max(float(np.ptp(field)), 1e-6)
        veil = (0.12 * level * (0.5 + field))[..., None]
        x = x * (1 - veil) + veil * 0.85
    return (np.clip(x, 0, 1) * 255 + 0.5).astype(np.uint8)


def texture_xml_processor(names: tuple[str, ...]):
    """An XML processor adding a 2-D texture and a material `vla_bg_<name>` for each installed
    LIBERO texture named, so that a reset can put any of them on the table, wall or floor."""
    import xml.etree.ElementTree as ET
    from pathlib import Path

    import libero.libero

    folder = Path(libero.libero.__file__).parent / "assets" / "textures"
    missing = [n for n in names if not (folder / f"{n}.png").is_file()]
    if missing:
        raise ValueError(f"textures {missing} are not installed in {folder}")

    def process(xml: str) -> str:
        root = ET.fromstring(xml)
        asset = root.find("asset")
        for n in names:
            ET.SubElement(asset, "texture", name=f"vla_bg_{n}", type="2d", file=str(folder / f"{n}.png"))
            ET.SubElement(asset, "material", name=f"vla_bg_{n}", texture=f"vla_bg_{n}", texrepeat="3 3",
                          texuniform="true", reflectance="0", shininess="0.1", specular="0.2")
        return ET.tostring(root, encoding="unicode")

    return process


# the scene's surfaces, by the geoms LIBERO's arenas name (visual geoms only)
SURFACES = {"table": ("table_visual",), "floor": ("floor",),
            "wall": ("wall_leftcorner_visual", "wall_rightcorner_visual", "wall_left_visual", "wall_right_visual",
                     "wall_rear_visual", "wall_front_visual")}


def apply_to_scene(env, p: Perturbation | None) -> None:
    """Set the scene of the episode LiberoEnv is resetting (after its init state or layout, before
    the wait steps): the model's camera, lights and materials from their built values (so the
    last episode's perturbation never leaks into this one), then this episode's perturbation."""
    import mujoco

    model, data = env.sim.model._model, env.sim.data._data
    base = env._scene_base
    if base.get("model") is not model:  # first reset of a freshly built model: remember its scene
        base.clear()
        base.update(model=model, cam_pos=model.cam_pos.copy(), cam_quat=model.cam_quat.copy(),
                    light_dir=model.light_dir.copy(), light_diffuse=model.light_diffuse.copy(),
                    geom_matid=model.geom_matid.copy(), mat_rgba=model.mat_rgba.copy())
    model.cam_pos[:], model.cam_quat[:] = base["cam_pos"], base["cam_quat"]
    model.light_dir[:], model.light_diffuse[:] = base["light_dir"], base["light_diffuse"]
    model.geom_matid[:], model.mat_rgba[:] = base["geom_matid"], base["mat_rgba"]
    if p is None:
        return
    name = lambda kind, n: mujoco.mj_name2id(model, kind, n)
    if p.axis == "camera":
        cam = name(mujoco.mjtObj.mjOBJ_CAMERA, PERTURBED_CAMERA)
        model.cam_pos[cam], model.cam_quat[cam] = camera_pose(base["cam_pos"][cam], base["cam_quat"][cam], p.params)
    elif p.axis == "light":
        model.light_dir[:], model.light_diffuse[:] = light_settings(model.light_pos, base["light_dir"],
                                                                    base["light_diffuse"], p.params)
    elif p.axis == "background":
        table = name(mujoco.mjtObj.mjOBJ_GEOM, SURFACES["table"][0])
        if p.params["tint"] is not None and table >= 0 and model.geom_matid[table] >= 0:
            mat = model.geom_matid[table]
            model.mat_rgba[mat, :3] = np.clip(base["mat_rgba"][mat, :3] * (1 + np.asarray(p.params["tint"])), 0, 1)
        for surface, texture in p.params["textures"].items():
            mat = name(mujoco.mjtObj.mjOBJ_MATERIAL, f"vla_bg_{texture}")
            if mat < 0:
                raise ValueError(f"texture {texture!r} is not in this env's model: build it with "
                                 f"LiberoEnv(textures=...) naming it (envs.perturb.TEXTURES)")
            for geom in SURFACES[surface]:
                g = name(mujoco.mjtObj.mjOBJ_GEOM, geom)
                if g >= 0:
                    model.geom_matid[g] = mat
    elif p.axis == "robot":
        robot = env.robosuite_env.robots[0]
        idx = robot._ref_joint_pos_indexes
        joints = [model.joint(n).id for n in robot.robot_joints]
        lo, hi = model.jnt_range[joints, 0], model.jnt_range[joints, 1]
        data.qpos[idx] = np.clip(data.qpos[idx] + np.asarray(p.params["joint_offsets"]), lo + 1e-3, hi - 1e-3)
        data.qvel[idx] = 0
        mujoco.mj_forward(model, data)
        robot.controller.update(force=True)
        robot.controller.reset_goal()  # hold the new pose (the null-space target stays the default posture)
    elif p.axis == "layout":
        bodies = env._free_objects()
        for n, shift in layout_moves(env, p.params).items():
            adr = model.jnt_qposadr[model.body_jntadr[bodies[n]]]
            data.qpos[adr:adr + 2] += shift
        mujoco.mj_forward(model, data)


def layout_moves(env, p: dict) -> dict[str, np.ndarray]:
    """The xy shift (m) of each loose object for a layout perturbation: objects standing on the
    table move by their own draw (in a fixed order), objects on another loose object move with it
    (a bowl on the cookie box), objects on or in a fixture stay. What supports an object is what a
    ray straight down over it meets first among collision geoms (at reset, before the wait steps,
    LIBERO's objects hang a few cm above their support)."""
    import mujoco

    model, data = env.sim.model._model, env.sim.data._data
    table = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_GEOM, "table_collision")
    free = dict(sorted(env._free_objects().items()))
    root = {int(model.body_rootid[b]): n for n, b in free.items()}
    collision_only = np.array([1, 0, 0, 0, 0, 0], np.uint8)  # geom group 0
    hit, support = np.zeros(1, np.int32), {}
    alpha = model.geom_rgba[:, 3].copy()
    model.geom_rgba[:, 3] = 1  # mj_ray skips transparent geoms, and LIBERO's collision geoms are
    try:
        for n, b in free.items():
            # from 10 cm above its origin (an origin may lie inside its support: a bowl sunk in a
            # box's top), past the object itself
            mujoco.mj_ray(model, data, data.xpos[b] + [0, 0, 0.1], np.array([0.0, 0.0, -1.0]), collision_only, 1, b, hit)
            below = root.get(int(model.body_rootid[model.geom_bodyid[hit[0]]])) if hit[0] >= 0 else None
            support[n] = "table" if hit[0] == table else below
    finally:
        model.geom_rgba[:, 3] = alpha
    on_table = [n for n in free if support[n] == "table"]
    moves = dict(zip(on_table, layout_shifts(len(on_table), p)))

    def shift(n, depth=0):
        if n in moves or depth > len(free):
            return moves.get(n, np.zeros(2))
        return shift(support[n], depth + 1) if support[n] in free else np.zeros(2)

    return {n: shift(n) for n in free}


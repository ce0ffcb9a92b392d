"""One RoboCasa kitchen task behind the interface of `envs.libero_env.LiberoEnv`: our observation
(named camera images, the 8-D state, the instruction), our 7-D action (arm delta and gripper, the
mobile base held still), success by the task's own check, the horizon of RoboCasa's datasets, and
a scene fixed by a seed. Runs only under RoboCasa's interpreter (`.venv-robocasa`), where the
`robosuite` module is 1.5; `ROBOCASA_ASSETS_PATH` must be set before anything imports robocasa.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import mujoco
import numpy as np

from .lowpoly import DEFAULT_RENDER, RENDER_QUALITIES, render_xml_processor
from .robot_state import GraspCounter, robot_state
from .suites import ROBOCASA_CAMERAS as CAMERAS, ROBOCASA_SUITES

TASKS = tuple(name for name, _, _ in ROBOCASA_SUITES["robocasa"])  # the XVR paper's three
STANDIN_MARKER = "vla_standins.json"  # written by envs.robocasa_standins: the one kitchen it furnishes
# episode k of the protocol ("init state" k) starts from the scene of this seed + k: apart from
# collection's seeds (< 10^9) and the validation / DAgger layouts (eval_rollouts.worker)
PROTOCOL_SEED = 3 * 10**9
# PandaOmron's 12-D action under RoboCasa's controller config: arm (6), gripper, base (3), torso, mode
ARM, GRIPPER, MODE = slice(0, 6), 6, 11


class MissingAssets(ValueError):
    pass


def require_assets() -> Path:
    """The kitchen assets' folder; MissingAssets, naming ROBOCASA_ASSETS_PATH and how to get them,
    when it lacks them (the wheel ships layouts and procedural parts, not fixtures or objects)."""
    import robocasa.models

    root = Path(robocasa.models.assets_root)
    if not any((root / "fixtures" / "sinks").glob("*/model.xml")) or not (root / "objects").is_dir():
        raise MissingAssets(
            f"RoboCasa's kitchen assets are not in {root} (ROBOCASA_ASSETS_PATH="
            f"{os.environ.get('ROBOCASA_ASSETS_PATH', 'unset')}). On a machine with a network run "
            "`.venv-robocasa/bin/robocasa-download-assets --assets-path DIR`, then export "
            "ROBOCASA_ASSETS_PATH=DIR; for tests, `.venv-robocasa/bin/python -m envs.robocasa_standins DIR` "
            "writes stand-ins (boxes, kitchen layout 1 / style 1).")
    return root


class RoboCasaEnv:
    def __init__(self, task: str, cameras=CAMERAS, resolution: int = 128, max_steps: int | None = None,
                 layout: int | None = None, style: int | None = None, render_quality: str = DEFAULT_RENDER):
        """layout, style: pin the kitchen (RoboCasa's ids); None: RoboCasa's own choice per episode
        (on stand-in assets: the one kitchen they furnish)."""
        import robocasa  # noqa: F401  (registers the kitchen tasks with robosuite)
        from robocasa.utils.dataset_registry_utils import get_task_horizon
        from robocasa.utils.env_utils import create_env
        from robosuite.environments.base import REGISTERED_ENVS

        if task not in REGISTERED_ENVS:
            raise ValueError(f"unknown RoboCasa task {task!r}; the ones with experts and tests: {TASKS}")
        root = require_assets()
        if (root / STANDIN_MARKER).exists() and layout is None and style is None:
            kitchen = json.loads((root / STANDIN_MARKER).read_text())
            layout, style = kitchen["layout"], kitchen["style"]
        self.task, self.cameras = task, tuple(cameras)
        self.max_steps = max_steps or get_task_horizon(task)
        self.env = create_env(task, camera_names=list(self.cameras), camera_widths=resolution,
                              camera_heights=resolution, layout_ids=layout, style_ids=style)
        self.env.ignore_done = True  # the episode's end is ours: max_steps
        if render_quality not in RENDER_QUALITIES:
            raise ValueError(f"render_quality must be one of {RENDER_QUALITIES}, got {render_quality!r}")
        self.render_quality = render_quality  # as LIBERO's: full is RoboCasa's own, fast and lowpoly cheaper
        self.env.set_xml_processor(render_xml_processor(render_quality))
        self.raw_obs: dict = {}
        self.steps = 0
        self.resolution = resolution

    @property
    def instruction(self) -> str:
        return self.env.get_ep_meta()["lang"]

    def reset(self, *, seed: int | None = None, init_state_index: int | None = None) -> tuple[dict, dict]:
        """A new episode; the same seed gives the same kitchen, objects and robot placement.
        init_state_index k: the protocol's episode k (RoboCasa has no init-state files: a fixed seed)."""
        if init_state_index is not None:
            seed = PROTOCOL_SEED + int(init_state_index)
        if seed is not None:
            self.env.rng = np.random.default_rng(seed)  # every draw of the kitchen's reset reads it
        self.raw_obs = self.env.reset()
        # images are rendered by _observation, only for the steps someone looks at (a chunk's last,
        # a video's): rendering is most of a step's cost (bench/robocasa_cost.py). Every reset rebuilds the observables
        for c in self.cameras:
            self.env.modify_observable(f"{c}_image", "enabled", False)
        if self.render_quality != "full":
            self.env.sim._render_context_offscreen.scn.flags[mujoco.mjtRndFlag.mjRND_REFLECTION] = 0
        self.steps = 0
        self.grasps = GraspCounter()
        return self._observation(), {}

    def step(self, action, render: bool = True):
        action = np.asarray(action, np.float32)
        if action.shape != (7,) or not np.all(np.isfinite(action)):
            raise ValueError(f"action must be 7 finite numbers (arm delta 6, gripper 1), got {action.tolist()}")
        full = np.zeros(self.env.action_dim, np.float32)
        full[ARM], full[GRIPPER], full[MODE] = np.clip(action[:6], -1, 1), np.clip(action[6], -1, 1), -1.0
        self.raw_obs, _, _, _ = self.env.step(full)
        self.steps += 1
        self.grasps.update(action[6])
        success = bool(self.env._check_success())
        info = {"success": success, "steps": self.steps}
        return self._observation(render), float(success), success, self.steps >= self.max_steps, info

    def _observation(self, images: bool = True) -> dict:
        raw = self.raw_obs
        # MuJoCo renders upside down (OpenGL's origin): flipped to the usual image orientation
        imgs = {c: np.ascontiguousarray(self.env.sim.render(camera_name=c, width=self.resolution,
                                                            height=self.resolution)[::-1])
                for c in self.cameras} if images else {}
        state = robot_state(raw["robot0_eef_pos"], raw["robot0_eef_quat"], raw["robot0_gripper_qpos"])
        return {"images": imgs, "state": state, "instruction": self.instruction, "grasps": self.grasps.count}

    def close(self) -> None:
        self.env.close()

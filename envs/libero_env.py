"""A LIBERO task as a gymnasium env producing the observation dict of the design.

obs = {"images": {camera: uint8[H, W, 3] upright}, "state": float32[8], "instruction": str, "grasps": int}
state = eef position (3) + eef axis-angle (3) + gripper joint positions (2), LeRobot's LIBERO layout;
grasps = the grasp-release cycles the episode's own gripper commands completed (envs.robot_state).
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np

from .lowpoly import DEFAULT_RENDER, RENDER_QUALITIES, render_xml_processor
from .robot_state import GraspCounter, robot_state
from .suites import CAMERAS, Suite, get_suite

# OpenVLA's "dummy action" for the wait steps: no motion, gripper open.
NOOP_ACTION = np.array([0, 0, 0, 0, 0, 0, -1], dtype=np.float32)
MAX_LAYOUT_ATTEMPTS = 5  # fresh layouts: seeds tried before keeping a scene whose objects were thrown


class LiberoEnv(gym.Env):
    """One LIBERO task. `reset(init_state_index=i)` starts from the suite's fixed init state i
    (the evaluation protocol); `init_state_index=None` samples a fresh layout from LIBERO's own
    placement sampler (seeded by `seed`), which is how demonstrations avoid the test states."""

    metadata = {"render_modes": ["rgb_array"]}

    def __init__(
        self,
        suite: str | Suite = "libero_spatial",
        task_index: int = 0,
        cameras: tuple[str, ...] | list[str] = CAMERAS,
        resolution: int = 128,
        render_quality: str = DEFAULT_RENDER,
        max_steps: int | None = None,
        num_wait_steps: int | None = None,
        camera_obs: bool = True,
        depth: bool = False,
        textures: tuple[str, ...] = (),
    ):
        self.suite = get_suite(suite) if isinstance(suite, str) else suite
        self.task = self.suite.task(task_index)
        self.cameras = tuple(cameras) if camera_obs else ()
        if camera_obs and not self.cameras:
            raise ValueError("cameras is empty; pass camera_obs=False for a physics-only env")
        if not isinstance(resolution, int) or not 16 <= resolution <= 1024:
            raise ValueError(f"resolution must be an int in 16..1024, got {resolution!r}")
        self.resolution = resolution
        if render_quality not in RENDER_QUALITIES:
            raise ValueError(f"render_quality must be one of {RENDER_QUALITIES}, got {render_quality!r}")
        self.render_quality = render_quality
        self.depth = depth
        self.max_steps = self.suite.max_steps if max_steps is None else int(max_steps)
        self.num_wait_steps = self.suite.num_wait_steps if num_wait_steps is None else int(num_wait_steps)

        from libero.libero.envs import OffScreenRenderEnv
        from libero.libero.envs.env_wrapper import ControlEnv

        kwargs = dict(bddl_file_name=str(self.task.bddl_file), control_freq=self.suite.control_freq)
        if camera_obs:
            self.suite.check_cameras(self.cameras)
            self._env = OffScreenRenderEnv(
                **kwargs, camera_names=list(self.cameras), camera_heights=resolution,
                camera_widths=resolution, camera_depths=depth,
            )
        else:
            self._env = ControlEnv(**kwargs, use_camera_obs=False, has_offscreen_renderer=False)
        processors = [render_xml_processor(render_quality)] if render_quality != "full" and camera_obs else []
        if textures:  # the background axis swaps surfaces' materials: their textures must be in the model
            from .perturb import texture_xml_processor

            processors.append(texture_xml_processor(textures))
        if processors:
            def process(xml: str) -> str:
                for processor in processors:
                    xml = processor(xml)
                return xml

            self._env.env.set_xml_processor(process)
        self._restore_fixture_poses_on_soft_reset()
        self.perturbation = None  # envs.perturb.Perturbation of the current episode (reset's options)
        self._scene_base: dict = {}

        self.action_space = gym.spaces.Box(-1.0, 1.0, shape=(7,), dtype=np.float32)
        image = gym.spaces.Box(0, 255, shape=(resolution, resolution, 3), dtype=np.uint8)
        self.observation_space = gym.spaces.Dict({
            "images": gym.spaces.Dict({c: image for c in self.cameras}),
            "state": gym.spaces.Box(-np.inf, np.inf, shape=(8,), dtype=np.float32),
            "instruction": gym.spaces.Text(max_length=512),
            "grasps": gym.spaces.Discrete(1 << 16),
        })
        self._raw: dict = {}
        self._grasps = GraspCounter()
        self._steps = 0
        self._needs_reset = True
        self._render = True  # False: camera sensors return a blank image instead of rendering

    # -- properties -------------------------------------------------------------------------
    @property
    def instruction(self) -> str:
        return self.task.instruction

    @property
    def sim(self):
        """The robosuite MjSim (ground truth lives here; see envs.ground_truth)."""
        return self._env.sim

    @property
    def robosuite_env(self):
        return self._env.env

    @property
    def raw_obs(self) -> dict:
        """The last raw robosuite observation (images bottom-up, as the simulator renders)."""
        return self._raw

    # -- gymnasium API ----------------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict | None = None, init_state_index: int | None = None):
        if seed is not None and not (isinstance(seed, (int, np.integer)) and 0 <= seed < 2**32):
            raise ValueError(f"seed must be an int in 0..2**32-1 (numpy's seed range), got {seed!r}")
        super().reset(seed=seed)
        options = options or {}
        init_state_index = options.get("init_state_index", init_state_index)
        self.perturbation = options.get("perturbation")
        if seed is None and init_state_index is not None:
            # LIBERO's reset also re-samples fixture positions (cabinet, stove), which the init
            # state does not restore: seeding by the state index makes init state i one scene
            seed = int(init_state_index)
        for attempt in range(MAX_LAYOUT_ATTEMPTS):
            raw = self._reset_once(seed, init_state_index)
            # a fresh layout from a few seeds places objects into each other and the physics throws
            # them off the table (1 of 48 seeds scanned); such a scene is no task: sample another
            if init_state_index is not None or seed is None or not self._thrown_objects():
                break
            seed = int(np.random.default_rng([int(seed), attempt]).integers(2**31))
        self.layout_seed = seed if init_state_index is None else None  # the seed whose layout this is
        self._raw, self._steps, self._needs_reset = raw, 0, False
        self._grasps.reset()
        self.start_eef_quat = np.array(raw["robot0_eef_quat"])  # the hand as the episode starts (experts plan from it)
        self.start_eef_pos = np.array(raw["robot0_eef_pos"])
        info = {"success": bool(self._env.check_success()), "init_state_index": init_state_index,
                "layout_seed": self.layout_seed}
        return self._observation(raw), info

    def _free_objects(self) -> dict[str, int]:
        """Body ids of the task's loose objects (free joints), fixtures left out."""
        import mujoco

        model = self.sim.model._model
        return {n: b for n, b in self.robosuite_env.obj_body_id.items()
                if model.body_jntadr[b] >= 0 and model.jnt_type[model.body_jntadr[b]] == mujoco.mjtJoint.mjJNT_FREE}

    def _thrown_objects(self) -> list[str]:
        """Objects the wait steps moved more than 10 cm sideways from where the layout put them.
        LIBERO drops every object from a few cm above its spot (it falls 6-16 cm, onto the table,
        a box or a fixture) and a placed object may slide a few cm; objects placed into each other
        are thrown tens of cm to metres."""
        pos = self.sim.data._data.xpos
        return [n for n, b in self._free_objects().items() if np.linalg.norm(pos[b][:2] - self._placed[n][:2]) > 0.10]

    def _reset_once(self, seed: int | None, init_state_index: int | None) -> dict:
        if seed is not None:
            self._env.seed(int(seed))  # LIBERO seeds numpy's global RNG for its placement sampler
        for robot in self.robosuite_env.robots:  # the soft reset keeps the gripper's last command, which
            robot.gripper.current_action = np.zeros(robot.gripper.dof)  # it integrates: start from rest
        raw = self._env.reset()
        # robosuite's hard reset rebuilds the model every episode (~1 s), and LIBERO's fixture
        # placement then draws from a random stream shifted by one per earlier reset (the same
        # seed put the stove mm to cm elsewhere each time): an init state's scene depended on what
        # ran before it. After the first (which builds the model with the render settings), the
        # soft reset: the model kept, the data restored, fixtures placed from the seed alone
        self._env.env.hard_reset = False
        self._make_cameras_lazy()
        self._render = self.num_wait_steps == 0  # only the observation after the last wait step is seen
        if init_state_index is not None:
            states = self.suite.init_states(self.task.index)
            if not isinstance(init_state_index, (int, np.integer)) or not 0 <= init_state_index < len(states):
                raise ValueError(f"init_state_index {init_state_index!r} out of range 0..{len(states) - 1}")
            raw = self._env.set_init_state(states[int(init_state_index)])
        if self.render_quality != "full" and self.cameras:
            import mujoco

            ctx = self.sim._render_context_offscreen
            ctx.scn.flags[mujoco.mjtRndFlag.mjRND_REFLECTION] = 0
        if self.perturbation is not None or self._scene_base:
            from .perturb import apply_to_scene

            apply_to_scene(self, self.perturbation)  # also undoes the last episode's
        self._placed = {n: np.array(self.sim.data._data.xpos[b]) for n, b in self._free_objects().items()}
        for k in range(self.num_wait_steps):
            self._render = k == self.num_wait_steps - 1
            raw, _, _, _ = self._env.step(NOOP_ACTION)
        self._render = True
        return raw

    def step(self, action, render: bool = True):
        """One control step. render=False skips the cameras (the returned observation has no
        images): rendering is ~80% of a step's cost, and the middle of an open-loop action chunk
        needs no images. Images rendered afterwards are identical to always rendering."""
        if self._needs_reset:
            raise RuntimeError("call reset() before step() (the episode ended or never started)")
        a = np.asarray(action, dtype=np.float64).reshape(-1)
        if a.shape != (7,) or not np.all(np.isfinite(a)):
            raise ValueError(f"action must be 7 finite numbers (dx, dy, dz, droll, dpitch, dyaw, gripper), got {action!r}")
        self._render = render
        try:
            raw, _, _, _ = self._env.step(np.clip(a, -1.0, 1.0))
        finally:
            self._render = True
        self._raw = raw
        self._steps += 1
        self._grasps.update(a[6])
        goals = self.goals_met()
        success = all(goals)  # LIBERO's check_success: the conjunction of these very predicates
        truncated = self._steps >= self.max_steps and not success
        self._needs_reset = success or truncated
        obs = self._observation(raw, images=render)
        return obs, float(success), success, truncated, {"success": success, "steps": self._steps, "goals_met": goals}

    def goals_met(self) -> list[bool]:
        """Which of the task's goal predicates (BDDL, e.g. LIBERO-10's two) hold now: how far a
        failed multi-goal episode got."""
        rs = self.robosuite_env
        return [bool(rs._eval_predicate(g)) for g in rs.parsed_problem["goal_state"]]

    def render(self) -> np.ndarray:
        if not self.cameras:
            raise RuntimeError("this env was built with camera_obs=False")
        return self._observation(self._raw)["images"][self.cameras[0]]

    def close(self):
        if getattr(self, "_env", None) is not None:
            self._env.close()
            self._env = None

    # -- observation ------------------------------------------------------------------------
    def state(self, raw: dict | None = None) -> np.ndarray:
        raw = self._raw if raw is None else raw
        return robot_state(raw["robot0_eef_pos"], raw["robot0_eef_quat"], raw["robot0_gripper_qpos"])

    def _restore_fixture_poses_on_soft_reset(self) -> None:
        """LIBERO places fixtures (cabinet, stove) by writing the model's body poses, and places
        the objects that start on or in a fixture relative to the fixture's site as the model
        holds it *before* this reset's placement. A new model holds the XML's poses; a kept model
        holds the last episode's, so a soft reset put those bowls 29-44 cm off (in mid-air) for
        the same seed. Restoring the built model's body poses before each soft reset makes every
        reset sample from the state a new env samples from: a fresh layout is the new env's."""
        rs = self.robosuite_env
        inner = rs._reset_internal
        built = {}

        def reset_internal():
            model = rs.sim.model._model
            if built.get("model") is not model:  # a hard reset just built this model from XML
                built.update(model=model, pos=model.body_pos.copy(), quat=model.body_quat.copy())
            else:
                model.body_pos[:], model.body_quat[:] = built["pos"], built["quat"]
            inner()

        rs._reset_internal = reset_internal

    def _make_cameras_lazy(self) -> None:
        """Wrap each camera's robosuite sensor so it renders only while self._render is set. The
        sensor is still sampled at robosuite's usual sub-step (observations lag the step's end by
        a sub-step), so a rendered image is the one an always-rendering env would give."""
        if self.depth:  # the depth sensors read what the image sensors cache: keep them eager
            return
        blank = np.zeros((self.resolution, self.resolution, 3), np.uint8)
        for c in self.cameras:
            observable = self.robosuite_env._observables[f"{c}_image"]
            sensor = observable._sensor  # set directly: robosuite's modify_observable renders once to validate

            def lazy(obs_cache, sensor=sensor):
                return sensor(obs_cache) if self._render else blank

            lazy.__modality__ = sensor.__modality__  # robosuite reads the modality off the sensor
            observable._sensor = lazy

    def _observation(self, raw: dict, images: bool = True) -> dict:
        # MuJoCo renders with the origin at the bottom-left: flip rows to get upright images.
        images = {c: np.ascontiguousarray(raw[f"{c}_image"][::-1]) for c in self.cameras} if images else {}
        instruction = self.task.instruction
        p = self.perturbation
        if p is not None and p.axis == "noise":
            from .perturb import PERTURBED_CAMERA, noisy_image

            if PERTURBED_CAMERA in images:
                images[PERTURBED_CAMERA] = noisy_image(images[PERTURBED_CAMERA], p, self._steps)
        elif p is not None and p.axis == "language":
            instruction = p.params["instruction"]
        return {"images": images, "state": self.state(raw), "instruction": instruction, "grasps": self._grasps.count}

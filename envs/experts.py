"""Scripted experts: turn a task's BDDL goal into OSC_POSE delta actions from ground truth, one
skill (envs.object_skills, envs.push, envs.fixture_skills) per goal predicate, from an episode's start or from any state another policy
left (takeover, for DAgger).
"""

from __future__ import annotations

import numpy as np
from robosuite.utils import transform_utils as T

from .libero_env import LiberoEnv
from . import ground_truth as gt
from .fixture_skills import Door, Drawer, TurnKnob
from .object_skills import PickPlace
from .push import Push
from .set_aside import SetAside, blocking_object, free_spot
from .skills import Home, Skill


class UnsupportedTask(NotImplementedError):
    """The expert has no strategy for this goal predicate."""


class TaskExpert:
    """The expert for a whole BDDL goal: one skill per predicate, in order (the chained libero_10
    goals included): pick-and-place for `on` / `in` (opening a drawer first when the target is
    inside one), a knob turn for `turnon` / `turnoff`, a pull or push for a drawer's `open` /
    `close`, a swing for a hinged door's `close`, a push for a flat object onto a table region;
    an object the goal does not name, standing where a grasp's fingers go down, is set aside first.
Other goals (opening a hinged door) raise UnsupportedTask."""

    def __init__(self, env: LiberoEnv):
        goals = env.robosuite_env.parsed_problem["goal_state"]
        unsupported = [g for g in goals if g[0].lower() not in ("on", "in", "turnon", "turnoff", "open", "close")
                       or (g[0].lower() in ("open", "close") and not self._is_drawer(env, g[1])
                           and not (g[0].lower() == "close" and self._is_door(env, g[1])))]
        if unsupported:
            raise UnsupportedTask(f"no scripted strategy for {unsupported} in {env.task.name}")
        # knobs first (a pot set on a stove would be in the way of its knob's turn), closing last
        # (what goes into a drawer goes in before it shuts), but a drawer nothing goes into shuts
        # before another opens (an opened top drawer hangs over the bottom one's handle)
        goals = sorted(goals, key=lambda g: self._order(g, goals))
        self.env = env
        # objects that go onto one surface region together (two moka pots onto one stove) each
        # get their own place in it: (index among them, how many)
        onto = [g for g in goals if g[0].lower() == "on"]
        share = {id(g): ([h for h in onto if h[2] == g[2]].index(g), sum(h[2] == g[2] for h in onto)) for g in onto}
        self.planned = [skill for g in goals for skill in self._skills(env, g, share.get(id(g), (0, 1)))]
        self.steps = list(self.planned)  # plus the objects set aside on the way, per episode
        self.named = {a for g in goals for a in g[1:]}  # what the goal names: never set aside

    @staticmethod
    def _order(goal: list[str], goals: list[list[str]]) -> float:
        kind = goal[0].lower()
        if kind in ("turnon", "turnoff"):
            return -1.0
        if kind != "close":
            return 0.0
        filled = any(g[0].lower() in ("in", "on") and (g[2] == goal[1] or g[2].startswith(goal[1] + "_")) for g in goals)
        return -0.5 if not filled and any(g[0].lower() == "open" for g in goals) else 1.0

    @staticmethod
    def _first_joint_is(env: LiberoEnv, thing, kind: str) -> bool:
        """Whether a region site's or fixture's first joint is a `kind` ("SLIDE": a drawer,
        "HINGE": a door) joint."""
        import mujoco

        if thing is None or not getattr(thing, "joints", None):
            return False
        model = env.sim.model._model
        jid = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_JOINT, thing.joints[0])
        return jid >= 0 and model.jnt_type[jid] == getattr(mujoco.mjtJoint, f"mjJNT_{kind}")

    @staticmethod
    def _is_drawer(env: LiberoEnv, region: str) -> bool:
        return TaskExpert._first_joint_is(env, env.robosuite_env.object_sites_dict.get(region), "SLIDE")

    @staticmethod
    def _is_door(env: LiberoEnv, name: str) -> bool:
        """A fixture on a hinge (a microwave): its name is the goal's argument, not a region's."""
        return TaskExpert._first_joint_is(env, env.robosuite_env.fixtures_dict.get(name), "HINGE")

    @staticmethod
    def _skills(env: LiberoEnv, goal: list[str], slot: tuple[int, int] = (0, 1)) -> list[Skill]:
        kind = goal[0].lower()
        if kind in ("turnon", "turnoff"):
            return [TurnKnob(env, goal[1], on=kind == "turnon")]
        if kind in ("open", "close"):
            if TaskExpert._is_door(env, goal[1]):
                return [Door(env, goal[1])]
            return [Drawer(env, goal[1], open=kind == "open")]
        site = env.robosuite_env.object_sites_dict.get(goal[2])
        size = gt.object_info(env, goal[1]).size
        if kind == "on" and site is not None and size[2] < 0.03 and min(size[:2]) > 0.08:
            return [Push(env, goal[1], goal[2])]  # a plate onto a table region: too flat to grasp
        if kind == "in" and site is not None and getattr(site, "joints", None):  # open it first
            return [Drawer(env, goal[2], open=True, fit=goal[1]), Home(env),  # the opened drawer may overhang the object
                    PickPlace(env, goal[1], goal[2], predicate=kind, regrasp_when_blocked=True)]
        return [PickPlace(env, goal[1], goal[2], predicate=kind, slot=slot)]

    def reset(self, takeover: bool = False) -> None:
        """Plan from the current state: an episode's start, or (takeover=True) wherever another
        policy left the scene: skills whose goal holds are skipped, a held object is carried on,
        closed fingers open and a low arm rises before travelling (DAgger's relabelling)."""
        self.current, self.takeover = 0, takeover
        # the hand as this episode started it (pointing down, slightly tilted): the grasps are
        # planned for that pose, whatever the hand's pose is at a takeover
        quat = self.env.start_eef_quat if takeover else self.env.raw_obs["robot0_eef_quat"]
        self.R_down = T.quat2mat(quat)
        self.steps = list(self.planned)
        self._start()

    @property
    def phase(self) -> str:
        return f"{self.current}:{self.steps[self.current].phase}"

    def act(self, obs=None) -> np.ndarray:
        if self.steps[self.current].phase == "done" and self.current + 1 < len(self.steps):
            self.current += 1
            self._start()
        return self.steps[self.current].act(obs)

    def _start(self) -> None:
        """Plan the current step; first set aside an object the goal does not name if it stands
        where the fingers must go down to grasp."""
        step = self.steps[self.current]
        if type(step) is PickPlace and not step.goal_holds():
            blocker = blocking_object(step, self.named)
            spot = None if blocker is None else free_spot(self.env, blocker, away_from=step.obj)
            if spot is not None:
                self.steps.insert(self.current, SetAside(self.env, blocker, spot))
        self.steps[self.current].reset(self.R_down, self.takeover)


def make_expert(env: LiberoEnv) -> TaskExpert:
    return TaskExpert(env)


def _episode_rng(seed: int | None, init_state_index: int | None, *more: int) -> np.random.Generator:
    """Noise that is a function of the episode (its seed or init state), so a rerun repeats it."""
    return np.random.default_rng([0 if seed is None else seed, 0 if init_state_index is None else init_state_index + 1, *more])


def run_expert_episode(env: LiberoEnv, init_state_index: int | None = None, seed: int | None = None,
                       record: bool = False, expert: TaskExpert | None = None, noise: float = 0.0):
    """Run one episode; returns (success, steps, frames) with frames a list of (obs, action)
    when `record` (the observation each action was chosen from).

    noise > 0 is DART (Laskey et al., 2017): the arm executes the expert's action plus Gaussian
    noise of this standard deviation on the translation (dx, dy, dz; rotation and gripper are
    left alone), while `frames` keep the expert's clean action. The demonstrations then visit the
    states a slightly wrong policy reaches, labelled with how the expert recovers from them."""
    obs, _ = env.reset(seed=seed, init_state_index=init_state_index)
    expert = expert or make_expert(env)
    expert.reset()
    rng = _episode_rng(seed, init_state_index)
    frames = []
    for step in range(env.max_steps):
        action = expert.act(obs)
        if record:
            frames.append((obs, action))
        executed = action.copy()
        if noise > 0:
            executed[:3] = np.clip(action[:3] + rng.normal(0.0, noise, 3), -1.0, 1.0)
        obs, _, terminated, truncated, info = env.step(executed)
        if terminated or truncated:
            return bool(info["success"]), step + 1, frames
    return False, env.max_steps, frames


def run_handover_episode(env: LiberoEnv, init_state_index: int | None = None, seed: int | None = None,
                         disturb: str = "random", fraction: float = 0.3):
    """DAgger's premise, measured: something else drives first, then a fresh expert takes over from
    wherever the scene is (object dropped or in hand, fingers closed, arm anywhere).

    disturb="random": k random actions (translation U[-1, 1], small rotations, the gripper flipping
    now and then); "interrupt": the expert's own first k steps, then 10 random actions. k is uniform
    in 1..fraction x the suite's step limit (0.3: up to ~60% of a typical expert episode). The
    expert then gets the suite's whole step limit. Returns (success, k, steps after the handover)."""
    if disturb not in ("random", "interrupt"):
        raise ValueError(f"disturb must be 'random' or 'interrupt', got {disturb!r}")
    obs, _ = env.reset(seed=seed, init_state_index=init_state_index)
    rng = _episode_rng(seed, init_state_index, env.task.index, 1)
    k = int(rng.integers(1, int(fraction * env.max_steps) + 1))
    limit, env.max_steps = env.max_steps, k + 10 + env.max_steps
    expert, gripper = make_expert(env), -1.0
    try:
        expert.reset()
        for step in range(k + (10 if disturb == "interrupt" else 0)):
            if disturb == "interrupt" and step < k:
                action = expert.act(obs)
            else:
                gripper = -gripper if rng.random() < 0.1 else gripper
                action = np.concatenate([rng.uniform(-1, 1, 3), rng.uniform(-0.2, 0.2, 3), [gripper]])
            obs, _, terminated, truncated, info = env.step(action)
            if terminated or truncated:
                return bool(info["success"]), step + 1, 0
        expert.reset(takeover=True)
        for after in range(limit):
            obs, _, terminated, truncated, info = env.step(expert.act(obs))
            if terminated or truncated:
                return bool(info["success"]), k, after + 1
        return False, k, limit
    finally:
        env.max_steps = limit

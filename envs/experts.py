"""Scripted experts: turn a task's BDDL goal into OSC_POSE delta actions from ground truth, one
skill (envs.object_skills, envs.push, envs.fixture_skills) per goal predicate, from an episode's start or from any state another policy
left (takeover, for DAgger).
"""

from __future__ import annotations

import numpy as np
from robosuite.utils import transform_utils as T

from . import UnsupportedTask
from . import ground_truth as gt
from .libero_env import LiberoEnv
from .fixture_skills import Door, Drawer, TurnKnob
from .object_skills import PickPlace
from .push import Push
from .set_aside import SetAside, blocking_object, free_spot
from .skills import Home, Skill


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

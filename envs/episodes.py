"""Scripted-expert episodes for either simulator: the expert for an env (LIBERO's TaskExpert or a
RoboCasa expert), one episode run and recorded. Imports neither simulator at module level, so it
works under LIBERO's interpreter and under RoboCasa's (`.venv-robocasa`).
"""

from __future__ import annotations

import zlib

import numpy as np


def make_expert(env):
    """The scripted expert for `env` (an envs.libero_env.LiberoEnv or envs.robocasa_env.RoboCasaEnv):
    an object with reset(takeover=False) and act(obs) -> 7 numbers; UnsupportedTask if none."""
    if type(env).__name__ == "RoboCasaEnv":
        from .robocasa_experts import make_robocasa_expert

        return make_robocasa_expert(env)
    from .experts import TaskExpert

    return TaskExpert(env)


def episode_rng(seed: int | None, init_state_index: int | None, *more: int) -> np.random.Generator:
    """Noise that is a function of the episode (its seed or init state), so a rerun repeats it."""
    return np.random.default_rng([0 if seed is None else seed, 0 if init_state_index is None else init_state_index + 1, *more])


def run_expert_episode(env, init_state_index: int | None = None, seed: int | None = None,
                       record: bool = False, expert=None, noise: float = 0.0):
    """Run one episode; returns (success, steps, frames) with frames a list of (obs, action)
    when `record` (the observation each action was chosen from).

    noise > 0 is DART (Laskey et al., 2017): the arm executes the expert's action plus Gaussian
    noise of this standard deviation on the translation (dx, dy, dz; rotation and gripper are
    left alone), while `frames` keep the expert's clean action. The demonstrations then visit the
    states a slightly wrong policy reaches, labelled with how the expert recovers from them."""
    obs, _ = env.reset(seed=seed, init_state_index=init_state_index)
    expert = expert or make_expert(env)
    expert.reset()
    rng = episode_rng(seed, init_state_index)
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


def is_noop(action: np.ndarray, prev_action: np.ndarray | None) -> bool:
    """No motion and no gripper change: OpenVLA drops these from LIBERO demonstrations."""
    return prev_action is not None and np.linalg.norm(action[:6]) < 1e-4 and action[6] == prev_action[6]


def record_episode(env, expert, seed: int | None, init_state_index: int | None, noise: float = 0.0):
    """Run the expert once; returns (success, frames dict) with no-op steps removed: one array per
    camera (observation.images.<camera>), observation.state and action. noise: DART (run_expert_episode):
    executed actions are perturbed, the recorded ones are the expert's."""
    success, _, steps = run_expert_episode(env, init_state_index, seed, record=True, expert=expert, noise=noise)
    kept, prev = [], None
    for obs, action in steps:
        if not is_noop(action, prev):
            kept.append((obs, action))
        prev = action
    frames = {f"observation.images.{c}": np.stack([o["images"][c] for o, _ in kept]) for c in env.cameras}
    frames["observation.state"] = np.stack([o["state"] for o, _ in kept])
    frames["action"] = np.stack([a for _, a in kept]).astype(np.float32)
    return success, frames


def run_handover_episode(env, init_state_index: int | None = None, seed: int | None = None,
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
    # LIBERO's task is a Task with its index; RoboCasa's a name (crc32: stable across processes, unlike hash)
    task = zlib.crc32(env.task.encode()) if isinstance(env.task, str) else env.task.index
    rng = episode_rng(seed, init_state_index, task, 1)
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

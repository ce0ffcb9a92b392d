"""Deployment under latency, in simulation: LIBERO episodes driven through the real policy server
(websocket, loopback) and the robot-side runtime (`Bridge` with its chunk queue), with a delay
between each observation and its answer counted in control steps. The simulator advances one
control step per bridge tick whatever happens: while a request is in flight the arm executes
what is queued (async) or holds still (sync), as a real arm does.

Direct: the bridge is fed the env's observation each tick and its command drives the env (the
same conversions as the simulated ROS arm, `vla.deploy.sim_arm.command_to_action`).
"""

from __future__ import annotations

import numpy as np

from .bridge import Bridge, SafetyLimits
from .chunks import ChunkSettings, SimulatedLatency
from .sim_arm import command_to_action


def delay_steps(delay_ms: float, jitter_ms: float, control_hz: float, seed: int):
    """The delay of request i in control steps: delay_ms, plus a uniform jitter of +-jitter_ms
    drawn per request from a seeded generator, rounded up to whole steps (an answer can only be
    used at a tick)."""
    rng = np.random.default_rng(seed)
    period_ms = 1000.0 / control_hz

    def delay(i: int) -> int:
        ms = delay_ms + (rng.uniform(-jitter_ms, jitter_ms) if jitter_ms else 0.0)
        return int(np.ceil(max(0.0, ms) / period_ms - 1e-9))

    return delay


def run_episode(env, client, init: int, settings: ChunkSettings, delay, limits: SafetyLimits,
                control_hz: float = 20.0) -> dict:
    """One episode from init state `init`; success, steps, the largest step-to-step change of the
    commanded translation (m) and rotation (rad), and the bridge's counts."""
    sent = []
    clock = {"t": 0.0}
    bridge = Bridge(client, limits, list(env.cameras), env.instruction, sent.append, enabled=True,
                    clock=lambda: clock["t"], chunks=settings,
                    requests=SimulatedLatency(client, delay))
    obs, _ = env.reset(init_state_index=init)
    success, steps, last, max_move, max_turn = False, 0, None, 0.0, 0.0
    while True:
        raw = env.raw_obs
        for cam in env.cameras:
            bridge.update(cam, obs["images"][cam], clock["t"])
        bridge.update("pose", (raw["robot0_eef_pos"], raw["robot0_eef_quat"]), clock["t"])
        bridge.update("gripper", raw["robot0_gripper_qpos"], clock["t"])
        bridge.tick()
        cmd = sent[-1]
        if last is not None:
            max_move = max(max_move, float(np.linalg.norm(cmd.translation - last.translation)))
            max_turn = max(max_turn, float(np.linalg.norm(cmd.rotation - last.rotation)))
        last = cmd
        obs, _, term, trunc, info = env.step(command_to_action(cmd.translation, cmd.rotation, cmd.gripper))
        steps, clock["t"] = int(info["steps"]), clock["t"] + 1.0 / control_hz
        if term or trunc:
            success = bool(info["success"])
            break
    return {"success": success, "steps": steps, "max_jump_m": max_move, "max_jump_rad": max_turn, **bridge.stats}

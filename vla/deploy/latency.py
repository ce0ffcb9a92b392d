"""Deployment under latency, in simulation: LIBERO episodes driven through the real policy server
(websocket, loopback) and the robot-side runtime (`Bridge` with its chunk queue), with a delay
between each observation and its answer counted in control steps. The simulator advances one
control step per bridge tick whatever happens: while a request is in flight the arm executes
what is queued (async) or holds still (sync), as a real arm does.

Direct (`run_episode`): the bridge is fed the env's observation each tick and its command drives
the env (the same conversions as the simulated ROS arm, `vla.deploy.sim_arm.command_to_action`).
Through ROS (`run_episode_ros`): the simulated arm and the bridge as ROS nodes in lockstep on the
simulation's clock; the same episode, the same numbers.
"""

from __future__ import annotations

import ast
import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from .bridge import Bridge, SafetyLimits
from .chunks import ChunkSettings, SimulatedLatency
from .rosmaster import stop
from .sim_arm import command_to_action

ROOT = Path(__file__).resolve().parents[2]
SIM_ROBOT = ROOT / "configs/robot/libero_sim.yaml"  # the simulated arm's topics and limits


def sim_limits() -> SafetyLimits:
    """The simulated arm's safety limits (LIBERO's table, the data's full step), as the bridge reads them."""
    from omegaconf import OmegaConf

    return SafetyLimits(**OmegaConf.to_container(OmegaConf.load(SIM_ROBOT).safety.limits))


def run_episode(env, client, init: int, settings: ChunkSettings, delay, limits: SafetyLimits,
                control_hz: float = 20.0, render_all: bool = False) -> dict:
    """One episode from init state `init`; success, steps, the largest step-to-step change of the
    commanded translation (m) and rotation (rad), and the bridge's counts. The cameras are rendered
    only for the ticks that send a request (the rest never reach the policy; rendering is most of
    a step's cost) unless render_all: the same episode either way."""
    sent = []
    clock = {"t": 0.0}
    bridge = Bridge(client, limits, list(env.cameras), env.instruction, sent.append, enabled=True,
                    clock=lambda: clock["t"], chunks=settings,
                    requests=SimulatedLatency(client, delay))
    obs, _ = env.reset(init_state_index=init)
    images = obs["images"]
    success, steps, last, max_move, max_turn = False, 0, None, 0.0, 0.0
    while True:
        raw = env.raw_obs
        images = obs["images"] or images  # an unrendered step keeps the last images: no request reads them
        for cam in env.cameras:
            bridge.update(cam, images[cam], clock["t"])
        bridge.update("pose", (raw["robot0_eef_pos"], raw["robot0_eef_quat"]), clock["t"])
        bridge.update("gripper", raw["robot0_gripper_qpos"], clock["t"])
        bridge.tick()
        cmd = sent[-1]
        if last is not None:
            max_move = max(max_move, float(np.linalg.norm(cmd.translation - last.translation)))
            max_turn = max(max_turn, float(np.linalg.norm(cmd.rotation - last.rotation)))
        last = cmd
        obs, _, term, trunc, info = env.step(command_to_action(cmd.translation, cmd.rotation, cmd.gripper),
                                             render=render_all or bridge.asks_next_tick())
        steps, clock["t"] = int(info["steps"]), clock["t"] + 1.0 / control_hz
        if term or trunc:
            success = bool(info["success"])
            break
    return {"success": success, "steps": steps, "max_jump_m": max_move, "max_jump_rad": max_turn, **bridge.stats}


def chunk_overrides(settings: ChunkSettings) -> list[str]:
    """The bridge's command-line overrides for these settings, every field (execute_steps is a
    top-level key of configs/ros_bridge.yaml, the rest sit under chunks)."""
    return [f"{'' if name == 'execute_steps' else 'chunks.'}{name}={'null' if value is None else value}"
            for name, value in dataclasses.asdict(settings).items()]


def run_episode_ros(server_url: str, suite: str, task: int, init: int, settings: ChunkSettings, delay_ms: float,
                    jitter_ms: float, seed: int, cameras: list[str], resolution: int, render_quality: str,
                    max_steps: int | None, workdir: Path, timeout_s: float = 3600.0) -> dict:
    """The same episode through ROS, on the running master (vla.deploy.rosmaster): the simulated arm
    (`vla.sim_arm clock=sim`) and the bridge (`vla.ros_bridge clock=sim`, SIM_ROBOT's settings) as
    processes, in lockstep. Returns what run_episode returns; the arm measures the command changes."""
    from envs.suites import get_suite

    workdir.mkdir(parents=True, exist_ok=True)
    result = workdir / "result.json"
    result.unlink(missing_ok=True)
    py = lambda *args: [sys.executable, "-m", *args]  # noqa: E731
    arm = subprocess.Popen(py("vla.sim_arm", f"suite={suite}", f"task={task}", f"init={init}", "clock=sim",
                              f"cameras=[{','.join(cameras)}]", f"resolution={resolution}", f"render_quality={render_quality}",
                              f"max_steps={max_steps or 'null'}", f"result={result}"),
                           cwd=ROOT, stdout=(workdir / "sim_arm.log").open("w"), stderr=subprocess.STDOUT)
    bridge = subprocess.Popen(py("vla.ros_bridge", f"config={SIM_ROBOT}", f"server={server_url}",
                                 f"instruction={get_suite(suite).tasks[task].instruction}", "start_enabled=true",
                                 "clock=sim", f"simulated_delay.ms={delay_ms}", f"simulated_delay.jitter_ms={jitter_ms}",
                                 f"simulated_delay.seed={seed}", *chunk_overrides(settings),
                                 # simulated time: the answer's delay is the simulated one, not the machine's
                                 "safety.server_timeout_s=60"),
                              cwd=ROOT, stdout=(workdir / "bridge.log").open("w"), stderr=subprocess.STDOUT)
    try:
        arm.wait(timeout_s)
    finally:
        stop(arm, bridge)
    if not result.exists():
        raise RuntimeError(f"the simulated arm ended without a result; logs in {workdir}")
    status = json.loads(result.read_text())
    stats = [line.split("bridge stats: ", 1)[1] for line in (workdir / "bridge.log").read_text().splitlines()
             if "bridge stats: " in line]
    return {"success": status["success"], "steps": status["steps"], "max_jump_m": status["max_jump_m"],
            "max_jump_rad": status["max_jump_rad"], **(ast.literal_eval(stats[-1]) if stats else {})}

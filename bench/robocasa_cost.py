"""RoboCasa's cost per step under its own interpreter, side by side in one run: physics only (the
cameras switched off, as for the unseen steps of an action chunk) vs three 128x128 cameras at each
render setting (full: RoboCasa's own; fast; lowpoly), a reset (RoboCasa rebuilds the kitchen every
episode), and the scripted expert's episodes (lowpoly, as collection renders).

.venv-robocasa/bin/python bench/robocasa_cost.py [steps=60] [episodes=2] [resets=3] [task=TurnOffMicrowave] [--quick]
Uses $ROBOCASA_ASSETS_PATH, or writes stand-ins (envs.robocasa_standins) into a temporary folder.
Last line: RESULT reset_s=<f> step_ms_physics=<f> step_ms_full=<f> step_ms_fast=<f> step_ms_lowpoly=<f> full_vs_lowpoly=<f> ...
"""

import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # RoboCasa's interpreter does not have our package installed
if "ROBOCASA_ASSETS_PATH" not in os.environ:  # read by robocasa at import: set before anything imports it
    # written by another process: importing envs.robocasa_standins here would import robocasa first
    import subprocess

    standins = tempfile.mkdtemp(prefix="robocasa_standins_")
    subprocess.run([sys.executable, "-m", "envs.robocasa_standins", standins], check=True, stdout=subprocess.DEVNULL,
                   cwd=Path(__file__).resolve().parents[1])
    os.environ["ROBOCASA_ASSETS_PATH"] = standins

from envs.episodes import run_expert_episode  # noqa: E402
from envs.lowpoly import RENDER_QUALITIES  # noqa: E402
from envs.robocasa_env import CAMERAS, RoboCasaEnv  # noqa: E402
from vla.benchopts import options  # noqa: E402


def ms_per_step(env: RoboCasaEnv, steps: int, render: bool) -> float:
    rng = np.random.default_rng(0)
    t0 = time.perf_counter()
    for _ in range(steps):
        env.step(np.append(rng.uniform(-0.3, 0.3, 6), -1.0), render=render)
    return 1000 * (time.perf_counter() - t0) / steps


def main(argv):
    opts = options(argv, {"steps": 60, "episodes": 2, "resets": 3, "task": "TurnOffMicrowave"},
                   quick={"steps": 4, "episodes": 1, "resets": 1})
    steps, episodes, task = opts["steps"], opts["episodes"], opts["task"]
    resets, per_step = [], {}
    for quality in RENDER_QUALITIES:
        env = RoboCasaEnv(task, resolution=128, render_quality=quality)
        for k in range(opts["resets"]):
            t0 = time.perf_counter()
            env.reset(init_state_index=k)
            resets.append(time.perf_counter() - t0)
        ms_per_step(env, 5, True)  # warm-up: first renders
        if quality == "full":
            per_step["physics"] = ms_per_step(env, steps, False)
        per_step[quality] = ms_per_step(env, steps, True)
        env.close()
    reset = float(np.median(resets))
    physics = per_step.pop("physics")
    print(f"{task}: reset {reset:.2f} s (median of {len(resets)}); ms per step: physics only {physics:.1f}, with "
          f"{len(CAMERAS)} cameras at 128x128 " + ", ".join(f"{k} {v:.1f}" for k, v in per_step.items()))
    env = RoboCasaEnv(task, resolution=128)
    t0, ok, lengths = time.perf_counter(), 0, []
    for k in range(episodes):
        success, n, _ = run_expert_episode(env, init_state_index=k)
        ok, lengths = ok + success, lengths + [n]
    per_episode = (time.perf_counter() - t0) / max(episodes, 1)
    print(f"expert: {ok}/{episodes} successful, {per_episode:.1f} s per episode (steps {lengths}, cameras on)")
    env.close()
    print(f"RESULT reset_s={reset:.3f} step_ms_physics={physics:.2f} step_ms_full={per_step['full']:.2f} "
          f"step_ms_fast={per_step['fast']:.2f} step_ms_lowpoly={per_step['lowpoly']:.2f} "
          f"full_vs_lowpoly={per_step['full'] / per_step['lowpoly']:.2f} expert_s_per_episode={per_episode:.2f} "
          f"expert_success={ok}/{episodes}")


if __name__ == "__main__":
    main(sys.argv[1:])

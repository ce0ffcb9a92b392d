"""Simulation speed: env steps/s with two 128x128 cameras for each render setting (full, fast,
lowpoly), and the scripted expert's episodes/s as collection runs it (both cameras), fast vs
lowpoly, side by side in one run.

python bench/collect.py [steps=100] [episodes=3] [--quick]
Last line: RESULT steps_per_s_full=<f> steps_per_s_fast=<f> steps_per_s_lowpoly=<f> lowpoly_vs_fast=<f> ...
"""

import sys
import time

import numpy as np

from envs.episodes import make_expert, record_episode
from envs.libero_env import LiberoEnv
from envs.lowpoly import RENDER_QUALITIES
from vla.benchopts import options


def steps_per_second(quality: str, steps: int) -> float:
    env = LiberoEnv("libero_spatial", 0, resolution=128, render_quality=quality)
    env.reset(init_state_index=0)
    rng = np.random.default_rng(0)
    for _ in range(5):  # warm-up (first renders, controller JIT)
        env.step(np.zeros(7))
    t0 = time.perf_counter()
    for _ in range(steps):
        a = np.append(rng.uniform(-0.3, 0.3, 6), -1.0)
        env.step(a)
    rate = steps / (time.perf_counter() - t0)
    env.close()
    return rate


def expert_episodes_per_second(quality: str, episodes: int) -> tuple[float, int]:
    env = LiberoEnv("libero_spatial", 0, resolution=128, render_quality=quality)
    expert = make_expert(env)
    t0 = time.perf_counter()
    ok = sum(record_episode(env, expert, seed=s, init_state_index=None)[0] for s in range(episodes))
    rate = episodes / (time.perf_counter() - t0)
    env.close()
    return rate, ok


def main(argv):
    opts = options(argv, {"steps": 100, "episodes": 3}, quick={"steps": 5, "episodes": 1})
    steps, episodes = opts["steps"], opts["episodes"]
    rates = {q: steps_per_second(q, steps) for q in RENDER_QUALITIES}
    print("env steps/s, 2 cameras 128x128: " + ", ".join(f"{q} {r:.2f}" for q, r in rates.items()))
    eps = {}
    for q in ("fast", "lowpoly"):
        eps[q], ok = expert_episodes_per_second(q, episodes)
        print(f"expert ({q}): {ok}/{episodes} successful, {eps[q]:.4f} episodes/s ({1 / eps[q]:.1f} s/episode incl. reset, "
              f"{3600 * eps[q]:.0f} episodes/hour)")
    print(f"RESULT steps_per_s_full={rates['full']:.3f} steps_per_s_fast={rates['fast']:.3f} "
          f"steps_per_s_lowpoly={rates['lowpoly']:.3f} lowpoly_vs_fast={rates['lowpoly'] / rates['fast']:.3f} "
          f"expert_episodes_per_hour_fast={3600 * eps['fast']:.0f} expert_episodes_per_hour_lowpoly={3600 * eps['lowpoly']:.0f}")


if __name__ == "__main__":
    main(sys.argv[1:])

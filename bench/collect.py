"""Simulation speed: env steps/s with two 128x128 cameras, default vs fast rendering, and the
scripted expert's episodes/s as collection runs it (fast rendering, both cameras).

python bench/collect.py [steps=100] [episodes=3]
Last line: RESULT steps_per_s_default=<f> steps_per_s_fast=<f> speedup=<f> expert_episodes_per_s=<f>
"""

import sys
import time

import numpy as np

from envs.experts import make_expert
from envs.libero_env import LiberoEnv
from vla.collect import record_episode


def steps_per_second(fast: bool, steps: int) -> float:
    env = LiberoEnv("libero_spatial", 0, resolution=128, fast_render=fast)
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


def main(argv):
    opts = dict(a.split("=", 1) for a in argv)
    steps, episodes = int(opts.get("steps", 100)), int(opts.get("episodes", 3))
    default = steps_per_second(False, steps)
    fast = steps_per_second(True, steps)
    print(f"env steps/s, 2 cameras 128x128: default {default:.2f}, fast rendering {fast:.2f} ({fast / default:.2f}x)")

    env = LiberoEnv("libero_spatial", 0, resolution=128, fast_render=True)
    expert = make_expert(env)
    t0 = time.perf_counter()
    ok = sum(record_episode(env, expert, seed=s, init_state_index=None)[0] for s in range(episodes))
    eps = episodes / (time.perf_counter() - t0)
    env.close()
    print(f"expert: {ok}/{episodes} successful, {eps:.4f} episodes/s ({1 / eps:.1f} s/episode incl. reset)")
    print(f"RESULT steps_per_s_default={default:.3f} steps_per_s_fast={fast:.3f} speedup={fast / default:.3f} "
          f"expert_episodes_per_s={eps:.4f}")


if __name__ == "__main__":
    main(sys.argv[1:])

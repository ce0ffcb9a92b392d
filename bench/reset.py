"""What a reset costs, and whether a reused env gives the scene a new env gives: robosuite's hard
reset (LIBERO as shipped: the model rebuilt from XML every episode) vs the soft reset LiberoEnv
uses after its first (the model kept, the data and the fixtures' poses restored), side by side in
one run, with two 128x128 cameras.

- init states, on libero_10 task 8 (two moka pots, a stove LIBERO places at reset): ms per reset
  over `resets` resets alternating between init states 44 and 1, a few random steps in between
  (an episode's end); drift = how far (mm) any body stands, after the wait steps, from where it
  stood at the first reset of the same init state.
- fresh layouts, on libero_spatial task 7 (one bowl on the stove, one on the cabinet: the case a
  soft reset used to get wrong by 43 cm): ms per reset over `resets` seeds in a row; off = how far
  (mm) any body stands from where a new env puts it for the same seed.

python bench/reset.py [resets=10] [--quick]
Last line: RESULT reset_hard_ms=<f> reset_soft_ms=<f> speedup=<f> drift_hard_mm=<f> drift_soft_mm=<f>
           fresh_hard_ms=<f> fresh_soft_ms=<f> fresh_speedup=<f> fresh_off_hard_mm=<f> fresh_off_soft_mm=<f>
"""

import sys
import time

import numpy as np

from envs.libero_env import LiberoEnv
from envs.suites import CAMERAS
from vla.benchopts import options

FRESH_SEEDS = (1_000, 1_001, 1_002)  # the new-env references (each a new env: ~3 s)


def bodies(env: LiberoEnv) -> np.ndarray:
    return np.array(env.sim.data._data.xpos)


def init_states(hard: bool, resets: int) -> tuple[float, float]:
    env = LiberoEnv("libero_10", 8, cameras=CAMERAS, resolution=128)
    rng = np.random.default_rng(0)
    first, times, drift = {}, [], 0.0
    for k in range(resets):
        init = (44, 1)[k % 2]
        env._env.env.hard_reset = hard  # robosuite's switch; LiberoEnv turns it off after each reset
        t0 = time.perf_counter()
        env.reset(init_state_index=init)
        times.append(time.perf_counter() - t0)
        if init in first:
            drift = max(drift, float(np.abs(bodies(env) - first[init]).max()))
        first.setdefault(init, bodies(env))
        for _ in range(5):
            env.step(np.append(rng.uniform(-0.5, 0.5, 6), 1.0), render=False)
    env.close()
    return 1000 * float(np.median(times)), 1000 * drift


def fresh_layouts(hard: bool, resets: int, reference: dict[int, np.ndarray]) -> tuple[float, float]:
    env = LiberoEnv("libero_spatial", 7, cameras=CAMERAS, resolution=128)
    env.reset(seed=0)  # the first reset builds the model either way: every timed one reuses the env
    times, off = [], 0.0
    for k in range(resets):
        seed = FRESH_SEEDS[k % len(FRESH_SEEDS)]
        env._env.env.hard_reset = hard
        t0 = time.perf_counter()
        env.reset(seed=seed)
        times.append(time.perf_counter() - t0)
        off = max(off, float(np.linalg.norm(bodies(env) - reference[seed], axis=1).max()))
    env.close()
    return 1000 * float(np.median(times)), 1000 * off


def main() -> None:
    resets = options(sys.argv[1:], {"resets": 10}, quick={"resets": 2})["resets"]
    reference = {}
    for seed in FRESH_SEEDS:
        env = LiberoEnv("libero_spatial", 7, cameras=CAMERAS, resolution=128)
        env.reset(seed=seed)
        reference[seed] = bodies(env)
        env.close()
    hard_ms, hard_drift = init_states(True, resets)
    soft_ms, soft_drift = init_states(False, resets)
    fresh_hard_ms, fresh_hard_off = fresh_layouts(True, resets, reference)
    fresh_soft_ms, fresh_soft_off = fresh_layouts(False, resets, reference)
    print(f"{'reset':20s} {'ms/reset':>9s} {'drift or off, mm':>17s}")
    print(f"{'init state, hard':20s} {hard_ms:9.0f} {hard_drift:17.2f}")
    print(f"{'init state, soft':20s} {soft_ms:9.0f} {soft_drift:17.2f}")
    print(f"{'fresh layout, hard':20s} {fresh_hard_ms:9.0f} {fresh_hard_off:17.2f}")
    print(f"{'fresh layout, soft':20s} {fresh_soft_ms:9.0f} {fresh_soft_off:17.2f}")
    print(f"RESULT reset_hard_ms={hard_ms:.0f} reset_soft_ms={soft_ms:.0f} speedup={hard_ms / soft_ms:.2f} "
          f"drift_hard_mm={hard_drift:.2f} drift_soft_mm={soft_drift:.2f} fresh_hard_ms={fresh_hard_ms:.0f} "
          f"fresh_soft_ms={fresh_soft_ms:.0f} fresh_speedup={fresh_hard_ms / fresh_soft_ms:.2f} "
          f"fresh_off_hard_mm={fresh_hard_off:.2f} fresh_off_soft_mm={fresh_soft_off:.2f}")


if __name__ == "__main__":
    main()

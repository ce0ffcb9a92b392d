"""What a reset costs, and whether an init state gives one scene whatever ran before it:
robosuite's hard reset (LIBERO as shipped: the model rebuilt from XML every episode) vs the soft
reset LiberoEnv uses after its first (the model kept, the data restored), side by side in one run, on
libero_10 task 8 (two moka pots, a stove LIBERO places at reset) with two 128x128 cameras.

- ms per reset with an init state (the wait steps included), over `resets` resets that alternate
  between init states 44 and 1, a few random steps in between (an episode's end);
- drift: how far (mm) any body stands, after the wait steps, from where it stood at the first
  reset of the same init state.

python bench/reset.py [resets=10]
Last line: RESULT reset_hard_ms=<f> reset_soft_ms=<f> speedup=<f> drift_hard_mm=<f> drift_soft_mm=<f>
"""

import sys
import time

import numpy as np

from envs.libero_env import LiberoEnv
from envs.suites import CAMERAS


def run(hard: bool, resets: int) -> tuple[float, float]:
    env = LiberoEnv("libero_10", 8, cameras=CAMERAS, resolution=128)
    rng = np.random.default_rng(0)
    first, times, drift = {}, [], 0.0
    for k in range(resets):
        init = (44, 1)[k % 2]
        env._env.env.hard_reset = hard  # robosuite's switch; LiberoEnv turns it off after each reset
        t0 = time.perf_counter()
        env.reset(init_state_index=init)
        times.append(time.perf_counter() - t0)
        bodies = np.array(env.sim.data._data.xpos)
        if init in first:
            drift = max(drift, float(np.abs(bodies - first[init]).max()))
        first.setdefault(init, bodies)
        for _ in range(5):
            env.step(np.append(rng.uniform(-0.5, 0.5, 6), 1.0), render=False)
    env.close()
    return 1000 * float(np.median(times)), 1000 * drift


def main() -> None:
    args = dict(a.split("=", 1) for a in sys.argv[1:])
    resets = int(args.get("resets", 10))
    hard_ms, hard_drift = run(True, resets)
    soft_ms, soft_drift = run(False, resets)
    print(f"{'reset':8s} {'ms/reset':>9s} {'drift mm':>9s}")
    print(f"{'hard':8s} {hard_ms:9.0f} {hard_drift:9.2f}")
    print(f"{'soft':8s} {soft_ms:9.0f} {soft_drift:9.2f}")
    print(f"RESULT reset_hard_ms={hard_ms:.0f} reset_soft_ms={soft_ms:.0f} speedup={hard_ms / soft_ms:.2f} "
          f"drift_hard_mm={hard_drift:.2f} drift_soft_mm={soft_drift:.2f}")


if __name__ == "__main__":
    main()

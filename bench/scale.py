"""Rollouts on Ray versus local worker processes, same number of env workers, same episodes, side
by side in one run on this machine: the batched engine with the scripted expert (libero_spatial,
two 128x128 cameras), its episodes per second with `backend=local` and with `backend=ray` (the
actors on a local Ray started for the run, each owning a worker process as on a cluster node).

python bench/scale.py [workers=2] [episodes=8] [max_steps=120] [--quick]
Last line: RESULT local_eps_per_s=<f> ray_eps_per_s=<f> ray_overhead=<f> (local time / Ray time per episode; goal <= 1.15)
"""

import sys
import tempfile
import time
from pathlib import Path

import ray

from eval_rollouts import engine
from eval_rollouts.engine import ExpertPolicy
from eval_rollouts.results import ResultsLog
from eval_rollouts.worker import EnvSpec
from vla.benchopts import options


def episodes_per_second(backend: str, spec: EnvSpec, episodes: list, workers: int, folder: Path) -> float:
    t0 = time.perf_counter()
    log = ResultsLog(folder / f"{backend}.jsonl")
    engine.run(ExpertPolicy(), spec, episodes, log, num_envs=workers, backend=backend)
    assert len(log.records) == len(episodes)
    return len(episodes) / (time.perf_counter() - t0)


def main(argv):
    opts = options(argv, {"workers": 2, "episodes": 8, "max_steps": 120}, quick={"episodes": 2, "max_steps": 10})
    workers, n, max_steps = opts["workers"], opts["episodes"], opts["max_steps"]
    spec = EnvSpec("libero_spatial", ("agentview", "robot0_eye_in_hand"), 128, expert=True, max_steps=max_steps)
    episodes = [(t, k) for k in range(n) for t in range(2)][:n]
    ray.init(address="local", num_cpus=workers, include_dashboard=False, log_to_driver=False)  # started before timing
    with tempfile.TemporaryDirectory() as d:
        rates = {b: episodes_per_second(b, spec, episodes, workers, Path(d)) for b in ("local", "ray")}
    ray.shutdown()
    print(f"{n} episodes (<= {max_steps} steps), {workers} env workers: " +
          ", ".join(f"{b} {r:.3f} episodes/s" for b, r in rates.items()))
    print(f"RESULT local_eps_per_s={rates['local']:.4f} ray_eps_per_s={rates['ray']:.4f} "
          f"ray_overhead={rates['local'] / rates['ray']:.3f}")


if __name__ == "__main__":
    main(sys.argv[1:])

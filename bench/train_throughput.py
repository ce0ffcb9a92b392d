"""Training throughput on this CPU: the CPU recipe as it shipped LIBERO-Spatial (2026-12) vs the
fast path, side by side in one run, through the real training loop (data loading, encode,
forward, backward, AdamW), each lever added in turn:

- recipe: `recipe=cpu` as shipped: 56 action queries (one per number of the 8-step chunk), the
  chat prompt, 112 px images decoded from PNG on every read;
- + kept images: frames kept in memory at the training resolution after their first read
  (train.image_cache_gb; the same pixels);
- + one query per chunk step (head.queries=steps: 8 tokens instead of 56);
- + compact prompt (train.prompt=compact: 33 fewer tokens);
- + 84 px (train.resolution=84: 9 instead of 16 image tokens per camera, 36 instead of 64 patches).

Samples/s only; whether the fast path learns as well per sample is measured by training
(docs/training.md, "The fast path"). Warm-up covers one pass over the dataset, so the kept
images are measured in their steady state; hence the small dataset by default.

python bench/train_throughput.py [dataset=data/throughput_bench] [steps=30] [--quick]
Without that dataset (a fresh clone) it is collected first (2 tasks x 2 scripted episodes of
LIBERO-Spatial, both 128x128 cameras; ~1 min, then reused). --quick: 3 steps each.
Last line: RESULT speedup=<fast/recipe> samples_per_s=<fast> samples_per_s_recipe=<f> ...
"""

import json
import math
import sys
import tempfile
from pathlib import Path

import numpy as np
from hydra import compose, initialize_config_dir

from vla.benchopts import options
from vla.train import train

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ["head.queries=dims", "train.prompt=chat", "train.resolution=112", "train.image_cache_gb=0"]
LEVERS = [("recipe", []), ("kept_images", ["train.image_cache_gb=8"]), ("steps_queries", ["head.queries=steps"]),
          ("compact_prompt", ["train.prompt=compact"]), ("px84", ["train.resolution=84"])]


def samples_per_second(overrides: list[str], dataset: str, steps: int, warmup: int) -> tuple[float, float]:
    with tempfile.TemporaryDirectory() as out, initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        cfg = compose(config_name="config", overrides=[
            "recipe=cpu", *overrides, f"train.dataset={dataset}", f"train.output_dir={out}",
            f"train.max_steps={warmup + steps}", f"train.save_every={10**6}", "train.eval_trials_per_task=0",
            "train.eval_every=0", "train.log_every=5"])
        train(cfg)
        log = [json.loads(line) for line in (Path(out) / "metrics.jsonl").read_text().splitlines()][warmup:]
        step_s = np.array([r["step_s"] for r in log])
        data_s = np.array([r["data_s"] for r in log])
        return cfg.train.batch_size / step_s.mean(), data_s.sum() / step_s.sum()


def bench_dataset(path: str) -> str:
    """The given dataset, or the bench's own small one (a few real scripted episodes, collected once)."""
    if (Path(path) / "meta" / "info.json").is_file():
        return path
    from vla.dataset.collection import collect_demos

    print(f"no dataset at {path}: collecting the bench's own small one")
    return str(collect_demos("libero_spatial", ROOT / "data" / "throughput_bench", 2, ["agentview", "robot0_eye_in_hand"],
                             128, tasks=[0, 1]))


def main(argv):
    opts = options(argv, {"dataset": "data/throughput_bench", "steps": 30}, quick={"steps": 3})
    dataset = bench_dataset(opts["dataset"])
    from vla.dataset.reader import LeRobotDataset

    warmup = 2 if opts["quick"] else math.ceil(len(LeRobotDataset(dataset)) / 32) + 2  # one pass fills the kept images
    overrides, rates, share = list(SHIPPED), {}, {}
    for name, lever in LEVERS:
        overrides += lever
        rates[name], share[name] = samples_per_second(overrides, dataset, opts["steps"], warmup)
        print(f"{name:>15}: {rates[name]:6.1f} samples/s ({rates[name] / rates['recipe']:.2f}x the recipe), "
              f"data loading {share[name]:.0%} of the step", flush=True)
    fast = rates[LEVERS[-1][0]]
    print(f"RESULT speedup={fast / rates['recipe']:.2f} samples_per_s={fast:.1f} samples_per_s_recipe={rates['recipe']:.1f} "
          + " ".join(f"{k}={v:.1f}" for k, v in rates.items() if k != "recipe")
          + f" data_share_recipe={share['recipe']:.3f} data_share_fast={share[LEVERS[-1][0]]:.3f}")


if __name__ == "__main__":
    main(sys.argv[1:])

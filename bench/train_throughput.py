"""Training throughput on this CPU: the earlier default path vs the CPU recipe, side by side in
one run, through the real training loop (data loading, encode, forward, backward, AdamW).

- before: tiny Qwen2.5-VL (hidden 128, 2 layers, vision 64 x 2), real Qwen vocabulary with its
  embedding trained, parallel L1 head, chunk 8, two 128x128 cameras, batch 8, one thread: the
  configuration measured at 7.3 samples/s when images went through the PIL image processor;
- recipe: `recipe=cpu` (configs/recipe/cpu.yaml): frozen text embeddings, 112x112 crops,
  batched torch image inputs, matmul patch embedding, batch 32, two threads, and a larger
  model (hidden 128 x 4 layers, vision 128 x 4);
- the recipe's path with the earlier model's sizes (what the path gains apart from capacity).

python bench/train_throughput.py [dataset=data/libero_spatial_50] [steps=30] [--quick]
Without that dataset (a fresh clone), a small one is collected first into data/throughput_bench
(2 tasks x 2 scripted episodes, both 128x128 cameras; ~1 min, then reused). --quick: 3 steps each.
Last line: RESULT speedup=<f> samples_per_s=<f> samples_per_s_before=<f> ...
"""

import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from hydra import compose, initialize_config_dir

from vla.benchopts import options
from vla.train import train

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
BEFORE = ["model.vocab=qwen", "head=parallel", "head.chunk_size=8", "train.batch_size=8", "train.num_threads=1",
          "train.resolution=128"]
RECIPE = ["recipe=cpu"]
# the recipe's path with the earlier model's sizes: what the path alone gains, apart from capacity
RECIPE_SMALL = ["recipe=cpu", "model.tiny.num_hidden_layers=2", "model.tiny.intermediate_size=256",
                "model.tiny.vision_depth=2", "model.tiny.vision_hidden_size=64", "model.tiny.vision_num_heads=2"]
PIL_REFERENCE = 7.3  # samples/s of BEFORE with the PIL image processor (measured before this change)


def samples_per_second(overrides: list[str], dataset: str, steps: int, warmup: int = 5) -> tuple[float, float]:
    with tempfile.TemporaryDirectory() as out, initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        cfg = compose(config_name="config", overrides=[
            *overrides, f"train.dataset={dataset}", f"train.output_dir={out}", f"train.max_steps={warmup + steps}",
            f"train.save_every={10**6}", "train.eval_trials_per_task=0", "train.eval_every=0", "train.log_every=5"])
        t0 = time.perf_counter()
        train(cfg)
        wall = time.perf_counter() - t0
        log = [json.loads(line) for line in (Path(out) / "metrics.jsonl").read_text().splitlines()][warmup:]
        step_s = np.array([r["step_s"] for r in log])
        data_s = np.array([r["data_s"] for r in log])
        print(f"{' '.join(overrides)}: {cfg.train.batch_size / step_s.mean():.1f} samples/s, {step_s.mean() * 1000:.0f} ms/step "
              f"(data loading {data_s.sum() / step_s.sum():.0%}), run incl. model build {wall:.0f} s")
        return cfg.train.batch_size / step_s.mean(), data_s.sum() / step_s.sum()


def small_dataset() -> str:
    """The bench's own data when none is given: a few real scripted episodes (collected once)."""
    from vla.dataset.collection import collect_demos

    root = Path(__file__).resolve().parents[1] / "data" / "throughput_bench"
    return str(collect_demos("libero_spatial", root, 2, ["agentview", "robot0_eye_in_hand"], 128, tasks=[0, 1]))


def main(argv):
    opts = options(argv, {"dataset": "data/libero_spatial_50", "steps": 30, "warmup": 5}, quick={"steps": 3, "warmup": 2})
    dataset, steps, warmup = opts["dataset"], opts["steps"], opts["warmup"]
    if not (Path(dataset) / "meta" / "info.json").is_file():
        print(f"no dataset at {dataset}: using the bench's own small one")
        dataset = small_dataset()
    before, _ = samples_per_second(BEFORE, dataset, steps, warmup)
    recipe, data_share = samples_per_second(RECIPE, dataset, steps, warmup)
    small, _ = samples_per_second(RECIPE_SMALL, dataset, steps, warmup)
    print(f"recipe vs before: {recipe / before:.2f}x; vs the PIL-processor path's {PIL_REFERENCE} samples/s: "
          f"{recipe / PIL_REFERENCE:.2f}x; the recipe's path on the earlier model sizes: {small:.1f} samples/s "
          f"({small / before:.2f}x before, {small / PIL_REFERENCE:.2f}x the PIL reference)")
    print(f"RESULT speedup={recipe / before:.2f} samples_per_s={recipe:.1f} samples_per_s_before={before:.1f} "
          f"speedup_vs_pil_reference={recipe / PIL_REFERENCE:.2f} path_speedup_same_model={small / before:.2f} "
          f"path_speedup_same_model_vs_pil_reference={small / PIL_REFERENCE:.2f} data_share={data_share:.3f}")


if __name__ == "__main__":
    main(sys.argv[1:])

"""Policy speed on the same tiny backbone and chunk: per-action latency of autoregressive `tokens`
decoding (KV cache, constrained to action ids) vs one-pass `parallel` decoding, and training
samples/s with the share of the step time spent loading data.

python bench/inference.py [model=tiny_qwen2_5_vl] [chunk=8] [batch=4] [repeats=5] [dataset=PATH] [train_steps=40] [--quick]
Without dataset=, a 2-episode libero_spatial dataset is collected first (about a minute; 1 episode with --quick).
Last line: RESULT parallel_vs_ar_speedup=<f> data_loading_share=<f> ...
"""

import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from action_tokenizer import ActionStats
from policies.backbone import build_backbone
from policies.transforms import StateNormalizer
from policies.vla_model import PolicySpec, VLAModel, extra_tokens
from vla.benchopts import options

CONFIGS = str(Path(__file__).resolve().parents[1] / "configs")


def config(*overrides):
    with initialize_config_dir(config_dir=CONFIGS, version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides))


def seconds_per_action(model_name: str, head: str, chunk: int, batch: int, repeats: int) -> float:
    cfg = config(f"model={model_name}")
    spec = PolicySpec(head=head, output="tokens" if head == "tokens" else "l1", chunk_size=chunk)
    rng = np.random.default_rng(0)
    acts = rng.uniform(-1, 1, (256, 7)).astype(np.float32)
    model = VLAModel(build_backbone(OmegaConf.to_container(cfg.model), extra_tokens(spec)), spec,
                     ActionStats.from_actions(acts), StateNormalizer(np.zeros(8), np.ones(8))).eval()
    obs = {c: rng.integers(0, 255, (batch, 128, 128, 3), dtype=np.uint8) for c in spec.cameras}
    inputs = model.processor.encode(obs, rng.normal(size=(batch, 8)), ["pick up the black bowl and place it on the plate"] * batch)
    model.predict(inputs)  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        model.predict(inputs)
        times.append(time.perf_counter() - t0)
    return float(np.median(times)) / (batch * chunk)


def training_speed(dataset: str, steps: int) -> tuple[float, float]:
    from vla.train import train

    with tempfile.TemporaryDirectory() as out:
        cfg = config(f"train.dataset={dataset}", f"train.output_dir={out}", f"train.max_steps={steps}",
                     f"train.save_every={steps}", "train.collect_if_missing=false", "train.eval_trials_per_task=0")
        train(cfg)
        rows = [json.loads(l) for l in (Path(out) / "metrics.jsonl").read_text().splitlines()][3:]  # skip warm-up
    data, step = sum(r["data_s"] for r in rows), sum(r["step_s"] for r in rows)
    return len(rows) * cfg.train.batch_size / step, data / step


def main(argv):
    args = options(argv, {"model": "tiny_qwen2_5_vl", "chunk": 8, "batch": 4, "repeats": 5, "dataset": None,
                          "train_steps": 40, "episodes": 2}, quick={"repeats": 1, "episodes": 1})
    model_name, chunk, batch, repeats = args["model"], args["chunk"], args["batch"], args["repeats"]
    torch.set_num_threads(1)
    ar = seconds_per_action(model_name, "tokens", chunk, batch, repeats)
    par = seconds_per_action(model_name, "parallel", chunk, batch, repeats)
    print(f"{model_name}, chunk {chunk}, batch {batch}: tokens (autoregressive, KV cache) {ar * 1e3:.2f} ms/action, "
          f"parallel {par * 1e3:.2f} ms/action")
    dataset = args["dataset"]
    tmp = None
    if dataset is None:
        from vla.dataset.collection import collect_demos

        tmp = tempfile.TemporaryDirectory()
        dataset = collect_demos("libero_spatial", Path(tmp.name) / "ds", args["episodes"], ["agentview", "robot0_eye_in_hand"], 128, tasks=[0])
    sps, share = training_speed(dataset, args["train_steps"])
    print(f"training (tokens head, batch 8): {sps:.1f} samples/s, data loading {share:.1%} of the step time")
    print(f"RESULT parallel_vs_ar_speedup={ar / par:.2f} data_loading_share={share:.3f} "
          f"ms_per_action_tokens={ar * 1e3:.2f} ms_per_action_parallel={par * 1e3:.2f} train_samples_per_s={sps:.1f}")


if __name__ == "__main__":
    main(sys.argv[1:])

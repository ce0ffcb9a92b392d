"""Does spatial tuning make a better policy? The same demonstrations, action-training steps and
seed, the tiny backbone with vs without the spatial stage, both evaluated on libero_spatial by
the batched engine; success with 95% Wilson intervals and the difference with Newcombe's
interval. The spatial stage's compute is reported separately, and the spatial benchmark (held-out
scenes) of both backbones is printed too. Every part resumes: rerun the same command after a kill.

python bench/spatial_ablation.py [dataset=data/libero_spatial_12] [spatial_samples=2000]
    [spatial_steps=300] [action_steps=3000] [trials_per_task=50] [num_envs=2] [out=outputs/ablation]
    [base_output=outputs/train/results-libero_spatial-parallel] [tasks=0,1 (default: all 10)]
Last line: RESULT success_tuned=<f> success_base=<f> delta=<f> ci_low=<f> ci_high=<f>
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from hydra import compose, initialize_config_dir

from eval_rollouts.results import newcombe, wilson

CONFIGS = str(Path(__file__).resolve().parents[1] / "configs")


def config(name: str, *overrides: str):
    with initialize_config_dir(config_dir=CONFIGS, version_base="1.3"):
        return compose(config_name=name, overrides=list(overrides))


def main() -> None:
    from vla.eval import evaluate
    from vla.spatial.eval import evaluate as spatial_eval
    from vla.spatial.generate import generate
    from vla.train import train

    args = dict(a.split("=", 1) for a in sys.argv[1:])
    out = Path(args.get("out", "outputs/ablation"))
    dataset = args.get("dataset", "data/libero_spatial_12")
    trials, num_envs = int(args.get("trials_per_task", 50)), int(args.get("num_envs", 2))
    spatial_data = args.get("spatial_data", "data/spatial/libero_spatial")
    tasks = [f"eval.tasks=[{args['tasks']}]"] if "tasks" in args else []

    t0 = time.time()
    generate(config("spatial", f"samples={args.get('spatial_samples', 2000)}", f"out={spatial_data}"))
    t_gen = time.time() - t0
    t0 = time.time()
    spatial_ckpt = train(config("config", "stage=spatial", f"train.dataset={spatial_data}",
                                f"train.max_steps={args.get('spatial_steps', 300)}",
                                f"train.output_dir={out / 'spatial'}"))
    t_spatial = time.time() - t0

    # identical action training for both; only the starting backbone differs
    action = ["head=parallel", f"train.dataset={dataset}", "train.batch_size=16", f"train.max_steps={args.get('action_steps', 3000)}",
              "train.lr=1e-3", "train.warmup_steps=100", "train.save_every=250", "train.eval_trials_per_task=0"]
    runs = {"base": (args.get("base_output", "outputs/train/results-libero_spatial-parallel"), []),
            "tuned": (str(out / "tuned"), [f"backbone_checkpoint={spatial_ckpt}"])}
    success = {}
    for name, (output_dir, extra) in runs.items():
        ckpt = train(config("config", *action, *extra, f"train.output_dir={output_dir}"))
        summary = evaluate(config("config", "eval.policy=checkpoint", f"eval.checkpoint={ckpt}",
                                  f"eval.trials_per_task={trials}", f"eval.num_envs={num_envs}", "eval.replan_steps=8",
                                  f"eval.out={Path(output_dir) / 'eval_libero_spatial'}", *tasks))
        success[name] = (summary["successes"], summary["episodes"])

    bench = {}
    for name, ckpt in (("untuned", None), ("tuned", spatial_ckpt)):
        bench[name] = spatial_eval(config("spatial_eval", f"checkpoint={ckpt or 'null'}", f"dataset={spatial_data}",
                                          f"out={out / 'spatial_eval' / name}"))["overall"]

    (kt, nt), (kb, nb) = success["tuned"], success["base"]
    lo, hi = newcombe(kt, nt, kb, nb)
    print(f"spatial data generation {t_gen / 60:.1f} min, spatial stage {t_spatial / 60:.1f} min (not in the action budget)")
    for name, b in bench.items():
        print(f"spatial benchmark, {name}: multiple choice {b['choice_accuracy']:.3f} (chance {b['choice_chance']:.3f}, "
              f"blind prior {b['choice_blind']:.3f}), numeric MRA {b['numeric_mra']:.3f} (blind median {b['numeric_blind']:.3f})")
    for name, (k, n) in success.items():
        l, h = wilson(k, n)
        print(f"libero_spatial success, {name}: {k}/{n} = {k / n:.3f} [{l:.3f}, {h:.3f}]")
    print(f"RESULT success_tuned={kt / nt:.4f} success_base={kb / nb:.4f} delta={kt / nt - kb / nb:.4f} "
          f"ci_low={lo:.4f} ci_high={hi:.4f}")


if __name__ == "__main__":
    main()

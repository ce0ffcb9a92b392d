"""The learning curve of a training run: validation success (rollouts on fresh seeded layouts,
`train.eval_layouts=random`, never the evaluation init states) against training samples and
CPU hours, from what `vla.train` wrote (metrics.jsonl, eval/step_*/success.json). Also names the
checkpoint with the best validation success: the one to evaluate on the protocol.
A run continued from another one's checkpoint (`train.init_from`) is chained after it:
run=first,second counts the second run's samples and hours on top of the first's.

python bench/learning_curve.py [run=outputs/train/libero_spatial-cpu-recipe[,continued run...]] [png=docs/learning_curve.png] [--quick]
--quick: the curve of a tiny run made for it (one demonstration, 4 steps, validated at steps 2 and 4 on one short episode).
Last line: RESULT best_step=<n> best_validation_success=<f> samples=<n> cpu_hours=<f>
"""

import json
import sys
from pathlib import Path

import numpy as np
import yaml

from eval_rollouts.results import wilson
from vla.benchopts import options, toy_policy


def main(argv):
    opts = options(argv, {"run": "outputs/train/libero_spatial-cpu-recipe", "png": "docs/learning_curve.png"})
    if opts["quick"]:
        import tempfile

        folder = Path(tempfile.mkdtemp(prefix="learning_curve_quick_"))
        run = toy_policy(folder, "train.save_every=2", "train.eval_every=2", "train.eval_trials_per_task=1",
                         "train.eval_layouts=random", "eval.tasks=[0]", "eval.max_steps=8", "eval.num_envs=1",
                         "eval.save_videos=0").parents[1]  # validated at steps 2 and 4
        opts.update(run=str(run), png=str(folder / "curve.png"))
    runs = [Path(r) for r in opts["run"].split(",")]
    png = Path(opts["png"])
    points, starts = [], []  # (run, step, samples, CPU hours, successes, episodes); where each run begins
    samples0 = hours0 = 0.0
    for run in runs:
        cfg = yaml.safe_load((run / "config.yaml").read_text())
        batch, threads = int(cfg["train"]["batch_size"]), int(cfg["train"]["num_threads"])
        steps = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        hours = np.cumsum([r["step_s"] for r in steps]) * threads / 3600  # training only: evaluation excluded
        starts.append((samples0, run.name))
        for f in sorted((run / "eval").glob("step_*/success.json")):
            step = int(f.parent.name.split("_")[1])
            s = json.loads(f.read_text())
            points.append((run, step, samples0 + step * batch, hours0 + hours[min(step, len(hours)) - 1],
                           s["successes"], s["episodes"]))
        samples0, hours0 = samples0 + len(steps) * batch, hours0 + hours[-1]
    if not points:
        raise SystemExit(f"{','.join(map(str, runs))}: no validation evaluations yet (train.eval_every)")
    print("| run | step | samples | CPU hours (training) | validation success |\n|---|---|---|---|---|")
    for run, step, n, h, k, e in points:
        lo, hi = wilson(k, e)
        print(f"| {run.name} | {step} | {n:,.0f} | {h:.2f} | {k}/{e} ({100 * k / e:.0f}%, CI {100 * lo:.0f}-{100 * hi:.0f}%) |")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = np.array([p[2] for p in points]) / 1000
    rate = np.array([p[4] / p[5] for p in points])
    ci = np.array([wilson(p[4], p[5]) for p in points])
    fig, ax = plt.subplots(figsize=(6, 3.6))
    ax.fill_between(x, ci[:, 0] * 100, ci[:, 1] * 100, alpha=0.2, label="95% Wilson interval")
    ax.plot(x, rate * 100, "o-", label=f"validation success ({points[-1][5]} episodes each)")
    for start, name in starts[1:]:
        ax.axvline(start / 1000, color="grey", ls="--", lw=0.8)
        ax.text(start / 1000, 50, f" continued (init_from): {name}", fontsize=7, rotation=90, va="center")
    ax.set_xlabel("training samples (thousands)")
    ax.set_ylabel("success (%)")
    ax.set_ylim(0, 100)
    h = [p[3] for p in points]
    top = ax.secondary_xaxis("top", functions=(lambda v: np.interp(v, x, h), lambda u: np.interp(u, h, x)))
    top.set_xlabel(f"CPU hours of training ({threads} threads)")
    ax.legend(loc="lower right", fontsize=8)
    ax.set_title(f"{cfg['suite']['name']}: {' + '.join(r.name for r in runs)}", fontsize=9)
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=120)
    best = max(points, key=lambda p: (p[4] / p[5], p[2]))  # ties: the later one
    print(f"plot: {png}; best validation checkpoint: {best[0] / 'checkpoints' / f'step_{best[1]:06d}'}")
    print(f"RESULT best_step={best[1]} best_run={best[0].name} best_validation_success={best[4] / best[5]:.3f} "
          f"samples={points[-1][2]:.0f} cpu_hours={points[-1][3]:.2f}")


if __name__ == "__main__":
    main(sys.argv[1:])

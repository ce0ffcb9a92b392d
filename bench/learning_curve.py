"""The learning curve of a training run: validation success (rollouts on fresh seeded layouts,
`train.eval_layouts=random`, never the evaluation init states) against training samples and
CPU hours, from what `vla.train` wrote (metrics.jsonl, eval/step_*/success.json). Also names the
checkpoint with the best validation success: the one to evaluate on the protocol.

python bench/learning_curve.py [run=outputs/train/libero_spatial-cpu-recipe] [png=docs/learning_curve.png]
Last line: RESULT best_step=<n> best_validation_success=<f> samples=<n> cpu_hours=<f>
"""

import json
import sys
from pathlib import Path

import numpy as np
import yaml

from eval_rollouts.results import wilson


def main(argv):
    opts = dict(a.split("=", 1) for a in argv)
    run = Path(opts.get("run", "outputs/train/libero_spatial-cpu-recipe"))
    png = Path(opts.get("png", "docs/learning_curve.png"))
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    batch, threads = int(cfg["train"]["batch_size"]), int(cfg["train"]["num_threads"])
    steps = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    seconds = np.cumsum([r["step_s"] for r in steps])  # training time only: evaluation excluded
    points = []
    for f in sorted((run / "eval").glob("step_*/success.json")):
        step = int(f.parent.name.split("_")[1])
        s = json.loads(f.read_text())
        cpu_h = seconds[min(step, len(seconds)) - 1] * threads / 3600
        points.append((step, step * batch, cpu_h, s["successes"], s["episodes"]))
    if not points:
        raise SystemExit(f"{run}: no validation evaluations yet (train.eval_every)")
    print("| step | samples | CPU hours (training) | validation success |\n|---|---|---|---|")
    for step, n, h, k, e in points:
        lo, hi = wilson(k, e)
        print(f"| {step} | {n:,} | {h:.2f} | {k}/{e} ({100 * k / e:.0f}%, CI {100 * lo:.0f}-{100 * hi:.0f}%) |")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = np.array([p[1] for p in points]) / 1000
    rate = np.array([p[3] / p[4] for p in points])
    ci = np.array([wilson(p[3], p[4]) for p in points])
    fig, ax = plt.subplots(figsize=(6, 3.6))
    ax.fill_between(x, ci[:, 0] * 100, ci[:, 1] * 100, alpha=0.2, label="95% Wilson interval")
    ax.plot(x, rate * 100, "o-", label=f"validation success ({points[-1][4]} episodes each)")
    ax.set_xlabel("training samples (thousands)")
    ax.set_ylabel("success (%)")
    ax.set_ylim(0, 100)
    top = ax.secondary_xaxis("top", functions=(lambda v: np.interp(v, x, [p[2] for p in points]),
                                               lambda h: np.interp(h, [p[2] for p in points], x)))
    top.set_xlabel(f"CPU hours of training ({threads} threads)")
    ax.legend(loc="upper left", fontsize=8)
    ax.set_title(f"{cfg['suite']['name']}: {run.name}", fontsize=9)
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=120)
    best = max(points, key=lambda p: (p[3] / p[4], p[0]))
    print(f"plot: {png}; best validation checkpoint: {run / 'checkpoints' / f'step_{best[0]:06d}'}")
    print(f"RESULT best_step={best[0]} best_validation_success={best[3] / best[4]:.3f} samples={points[-1][1]} "
          f"cpu_hours={points[-1][2]:.2f}")


if __name__ == "__main__":
    main(sys.argv[1:])

"""Robustness the way LIBERO-Plus measures it: a policy on each of the seven perturbation axes
(envs.perturb: camera, robot, language, light, background, noise, layout), levels 1-5 cycled over
the episodes (episode k of a task: level k mod 5 + 1, init state k), beside the same init states
unperturbed and beside LIBERO-Plus's published rows; the scripted expert's row (ground truth: only
physical perturbations can touch it). Optionally a policy trained for the weakest axis
(`trained=`) on that axis, and the seeds' claim on the grounding axis (`tuned=` vs `untuned=`:
the difference with Newcombe's interval). Also a picture of the axes (perturbations.png: rows
unperturbed, camera, robot, light, background, noise, layout; columns levels 1, 3, 5).

Every evaluation resumes (vla.eval's episodes.jsonl under out/): rerun after a kill.

python bench/robustness.py [checkpoint=checkpoints/tiny-libero_spatial] [suite=libero_spatial]
    [episodes_per_axis=100] [axes=all] [expert=true] [trained=] [tuned=] [untuned=]
    [grounding_axis=language:4] [grounding_episodes=200] [num_envs=2] [out=outputs/robustness]
    [publish=docs/results/robustness] [--quick]
--quick: a toy policy in every arm and the expert, axes camera and language, one task, one 8-step
episode per evaluation (plumbing only): about two minutes.
Last line: RESULT mean_axes=<f> weakest_axis=<name> weakest=<f> trained_weakest=<f|nan> tuned_delta=<f|nan>
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from hydra import compose, initialize_config_dir

from envs.perturb import AXES, parse
from eval_rollouts.results import newcombe, summarize, wilson
from vla.benchopts import options

ROOT = Path(__file__).resolve().parents[1]
# LIBERO-Plus's leaderboard (its README; success % per axis, all four suites pooled)
PUBLISHED = {
    "OpenVLA": (0.8, 3.5, 23.0, 8.1, 34.8, 15.2, 28.5),
    "OpenVLA-OFT": (56.4, 31.9, 79.5, 88.7, 93.3, 75.8, 74.2),
    "pi0": (13.8, 6.0, 58.8, 85.0, 81.4, 79.0, 68.9),
    "pi0-FAST": (65.1, 21.6, 61.0, 73.2, 73.2, 74.4, 68.8),
    "OpenVLA-OFT+ (trained on perturbed data)": (92.8, 30.3, 85.8, 94.9, 93.9, 89.3, 77.6),
}


def run_eval(opts: dict, name: str, policy: str, checkpoint: str | None, perturb: str | None, trials: int) -> list[dict]:
    """One vla.eval into out/<name>/<perturb or none>; its episode records."""
    from vla.eval import evaluate

    out = Path(opts["out"]) / name / (perturb or "none").replace(":", "_").replace(",", "+")
    overrides = [f"suite={opts['suite']}", f"eval.policy={policy}", f"eval.trials_per_task={trials}",
                 f"eval.num_envs={opts['num_envs']}", "eval.save_videos=0", f"eval.out={out}"]
    if checkpoint:
        overrides.append(f"eval.checkpoint={checkpoint}")
    if perturb:
        overrides.append(f"eval.perturb={perturb}")
    if opts["quick"]:
        overrides += ["eval.tasks=[0]", "eval.max_steps=8"]
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        evaluate(compose(config_name="config", overrides=overrides))
    return [json.loads(line) for line in (out / "episodes.jsonl").read_text().splitlines()]


def rate(records: list[dict]) -> tuple[int, int]:
    """(successes, episodes) as vla.eval counts them: episodes the environment failed left out."""
    summary = summarize(records, {})
    return summary["successes"], summary["episodes"]


def cell(k: int, n: int) -> str:
    lo, hi = wilson(k, n)
    return f"{100 * k / n:.1f} ({100 * lo:.0f}-{100 * hi:.0f})" if n else "-"


def axis_table(opts: dict, name: str, policy: str, checkpoint: str | None, trials: int) -> dict:
    """{axis: {"all": (k, n), level: (k, n)}} plus "none" for the same init states unperturbed."""
    rows = {"none": {"all": rate(run_eval(opts, name, policy, checkpoint, None, trials))}}
    for axis in opts["axes"]:
        records = run_eval(opts, name, policy, checkpoint, axis, trials)
        rows[axis] = {"all": rate(records)}
        for level in range(1, 6):
            rows[axis][level] = rate([r for r in records if r["perturbation"]["level"] == level])
    return rows


def main(argv: list[str]) -> None:
    opts = options(argv, {"checkpoint": "checkpoints/tiny-libero_spatial", "suite": "libero_spatial",
                          "episodes_per_axis": 100, "axes": "all", "expert": True, "trained": "", "tuned": "",
                          "untuned": "", "grounding_axis": "language:4", "grounding_episodes": 200, "num_envs": 2,
                          "out": "outputs/robustness", "publish": "docs/results/robustness"},
                   quick={"episodes_per_axis": 1, "axes": "camera,language", "grounding_episodes": 1, "out": "",
                          "publish": ""})
    if opts["quick"]:  # a toy policy in every arm's place
        import tempfile

        from vla.benchopts import toy_policy

        opts["out"] = opts["publish"] = tempfile.mkdtemp(prefix="robustness_quick_")
        toy = str(toy_policy(Path(opts["out"]) / "toy"))
        opts.update(checkpoint=toy, trained=toy, tuned=toy, untuned=toy)
    opts["axes"] = list(AXES) if opts["axes"] == "all" else opts["axes"].split(",")
    parse(",".join(opts["axes"]))  # unknown axes named before anything runs
    from envs.suites import get_suite

    tasks = 1 if opts["quick"] else len(get_suite(opts["suite"]).tasks)
    trials = max(1, opts["episodes_per_axis"] // tasks)
    tables = {}
    if opts["checkpoint"]:
        tables["ours"] = axis_table(opts, "ours", "checkpoint", opts["checkpoint"], trials)
    if opts["expert"]:
        tables["scripted expert"] = axis_table(opts, "expert", "scripted", None, trials)
    main_rows = tables.get("ours") or tables["scripted expert"]
    per_axis = {a: main_rows[a]["all"][0] / max(1, main_rows[a]["all"][1]) for a in opts["axes"]}
    mean_axes = sum(per_axis.values()) / len(per_axis)
    weakest = min(per_axis, key=per_axis.get)

    trained_weakest = tuned_delta = float("nan")
    extra = []
    if opts["trained"]:
        k, n = rate(run_eval(opts, "trained", "checkpoint", opts["trained"], weakest, trials))
        k0, n0 = rate(run_eval(opts, "trained", "checkpoint", opts["trained"], None, trials))
        trained_weakest = k / n
        extra.append(f"Trained for the weakest axis ({opts['trained']}): {weakest} {cell(k, n)}, unperturbed {cell(k0, n0)}.")
    if opts["tuned"] and opts["untuned"]:
        g_trials = max(1, opts["grounding_episodes"] // tasks)
        kt, nt = rate(run_eval(opts, "tuned", "checkpoint", opts["tuned"], opts["grounding_axis"], g_trials))
        ku, nu = rate(run_eval(opts, "untuned", "checkpoint", opts["untuned"], opts["grounding_axis"], g_trials))
        tuned_delta = kt / nt - ku / nu
        lo, hi = newcombe(kt, nt, ku, nu)
        extra.append(f"Spatial tuning on {opts['grounding_axis']}: tuned {cell(kt, nt)}, untuned {cell(ku, nu)}, "
                     f"difference {100 * tuned_delta:+.1f} points (95% Newcombe {100 * lo:+.1f} to {100 * hi:+.1f}).")

    lines = [f"Success % (95% Wilson CI) per perturbation axis, {opts['suite']}, {trials} episodes per task and axis "
             f"(levels 1-5 cycled, init states 0-{trials - 1}); LIBERO-Plus's published rows pool its four suites.", "",
             "| policy | unperturbed | " + " | ".join(opts["axes"]) + " | mean of axes |",
             "|---|---:|" + "---:|" * (len(opts["axes"]) + 1)]
    for name, rows in tables.items():
        axes = [rows[a]["all"] for a in opts["axes"]]
        mean = sum(k / max(1, n) for k, n in axes) / len(axes)
        lines.append(f"| {name} | {cell(*rows['none']['all'])} | " + " | ".join(cell(*c) for c in axes) + f" | {100 * mean:.1f} |")
    for name, values in PUBLISHED.items():
        by_axis = dict(zip(AXES, values))
        lines.append(f"| {name} | | " + " | ".join(f"{by_axis[a]:.1f}" for a in opts["axes"]) + " | |")
    lines += ["", "Per level (ours, or the expert's if no policy was given):", "",
              "| axis | " + " | ".join(f"level {lv}" for lv in range(1, 6)) + " |", "|---|" + "---:|" * 5]
    for a in opts["axes"]:
        lines.append(f"| {a} | " + " | ".join(cell(*main_rows[a][lv]) for lv in range(1, 6)) + " |")
    lines += [""] + extra
    report = "\n".join(lines) + "\n"
    publish = Path(opts["publish"])
    publish.mkdir(parents=True, exist_ok=True)
    (publish / "robustness.md").write_text(report)
    (publish / "robustness.json").write_text(json.dumps({n: {a: {str(k): v for k, v in r.items()} for a, r in rows.items()}
                                                         for n, rows in tables.items()}, indent=1))
    plot(tables, opts["axes"], publish / "robustness.png", opts["suite"])
    preview(opts["suite"], 0, publish / "perturbations.png")
    print(report)
    print(f"RESULT mean_axes={mean_axes:.3f} weakest_axis={weakest} weakest={per_axis[weakest]:.3f} "
          f"trained_weakest={trained_weakest:.3f} tuned_delta={tuned_delta:.3f}")


def preview(suite: str, task: int, out: Path) -> None:
    """A picture of the axes: one row per axis (unperturbed first; language has no picture),
    levels 1, 3 and 5 left to right, agentview beside the wrist camera, init state 0."""
    import numpy as np
    from PIL import Image

    from envs.libero_env import LiberoEnv
    from envs.perturb import TEXTURES, draw

    env = LiberoEnv(suite, task, textures=tuple(TEXTURES["eval"]))
    rows = []
    for axis in (None,) + tuple(a for a in AXES if a != "language"):
        row = []
        for k, level in ((0, 1), (1, 3), (2, 5)):
            p = draw(axis, level, task, k) if axis else None
            obs, _ = env.reset(init_state_index=0, options={"perturbation": p})
            row.append(np.concatenate([obs["images"][c] for c in env.cameras], axis=1))
        rows.append(np.concatenate(row, axis=1))
    env.close()
    Image.fromarray(np.concatenate(rows, axis=0)).save(out)


def plot(tables: dict, axes: list[str], png: Path, suite: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, ax = plt.subplots(figsize=(8, 3.6))
    x = np.arange(len(axes))
    width = 0.8 / (len(tables) + 1)
    for i, (name, rows) in enumerate(tables.items()):
        k = np.array([rows[a]["all"][0] for a in axes])
        n = np.array([max(1, rows[a]["all"][1]) for a in axes])
        ci = np.array([wilson(int(a), int(b)) for a, b in zip(k, n)])
        ax.bar(x + i * width, 100 * k / n, width, label=name,
               yerr=[100 * (k / n - ci[:, 0]), 100 * (ci[:, 1] - k / n)], capsize=2)
    oft = dict(zip(AXES, PUBLISHED["OpenVLA-OFT"]))
    ax.bar(x + len(tables) * width, [oft[a] for a in axes], width, label="OpenVLA-OFT (LIBERO-Plus)", color="lightgrey")
    ax.set_xticks(x + width * len(tables) / 2, axes)
    ax.set_ylabel("success (%)")
    ax.set_ylim(0, 105)
    ax.set_title(f"{suite}: success per perturbation axis (levels 1-5)", fontsize=9)
    ax.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    fig.savefig(png, dpi=120)


if __name__ == "__main__":
    main(sys.argv[1:])

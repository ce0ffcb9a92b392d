"""Plain BC vs DART vs DAgger, each continuing the same BC policy with the same number of new
expert-labelled episodes per task and the same training steps, evaluated on the same protocol
episodes; success with 95% Wilson intervals, each difference against the two BC arms with
Newcombe's interval. Every stage resumes: rerun the same command after a kill.

Arms (all start from `checkpoint`, the recipe's BC policy, and train through
vla.training.dagger.continue_training on the demonstrations plus their new data):
  bc       the checkpoint itself (no new data, no more training)
  bc_more  + N clean expert demonstrations per task (fresh layouts)            -> plain BC, more data
  dart     + N demonstrations run with DART noise, labelled with clean actions
  dagger   + N relabelled rollouts per task and round of the policy (vla.dagger, beta 0)

python bench/expert_in_the_loop.py [checkpoint=checkpoints/tiny-libero_spatial] [episodes_per_task=10]
    [noise=0.2] [steps=1000] [lr=3e-4] [warmup=100] [rounds=1] [trials_per_task=20] [num_envs=2]
    [out=outputs/expert_in_the_loop] [clean_data=...] [dart_data=...] [bc_eval=...] [tasks=all] [--quick]
--quick: the whole chain on task 0 at toy sizes (a 4-step policy of its own from one demonstration,
one episode per arm, 2 training steps, one 8-step evaluation episode per arm): minutes, not hours.
Last line: RESULT bc=<f> bc_more=<f> dart=<f> dagger=<f> dagger_minus_bc_more=<f> ci_low=<f> ci_high=<f> ...
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from hydra import compose, initialize_config_dir

from eval_rollouts.results import newcombe, wilson
from vla.benchopts import options, toy_policy

CONFIGS = str(Path(__file__).resolve().parents[1] / "configs")


def config(name: str, *overrides: str):
    with initialize_config_dir(config_dir=CONFIGS, version_base="1.3"):
        return compose(config_name=name, overrides=list(overrides))


def main() -> None:
    from vla.dataset.collection import collect
    from vla.dataset.reader import load_info
    from vla.eval import evaluate
    from vla.training.dagger import continue_training, demonstrations, round_dir, run_dagger

    args = options(sys.argv[1:], {
        "checkpoint": "checkpoints/tiny-libero_spatial", "out": "outputs/expert_in_the_loop", "episodes_per_task": 10,
        "noise": 0.2, "rounds": 1, "steps": 1000, "lr": 3e-4, "warmup": 100, "trials_per_task": 20, "num_envs": "2",
        "clean_data": "", "dart_data": "", "bc_eval": "", "tasks": "all"},
        quick={"episodes_per_task": 1, "steps": 2, "warmup": 1, "trials_per_task": 1, "num_envs": "1", "tasks": "0"})
    out = Path(args["out"])
    n, noise, rounds = args["episodes_per_task"], args["noise"], args["rounds"]
    steps, lr, warmup, trials, num_envs = args["steps"], args["lr"], args["warmup"], args["trials_per_task"], args["num_envs"]
    tasks = [] if args["tasks"] == "all" else [f"tasks=[{args['tasks']}]"]
    short = []  # quick: toy images and 8-step evaluation episodes
    if args["quick"]:
        import tempfile

        out = Path(tempfile.mkdtemp(prefix="expert_in_the_loop_quick_"))
        args["checkpoint"] = str(toy_policy(out, "head=parallel"))
        short = ["cameras=[agentview]", "resolution=64"]
    ckpt = Path(args["checkpoint"])

    dagger_cfg = config("dagger", f"checkpoint={ckpt}", f"rounds={rounds}", f"episodes_per_task={n}",
                        f"steps_per_round={steps}", f"lr={lr}", f"warmup_steps={warmup}", f"num_envs={num_envs}",
                        f"out={out / 'dagger'}", *tasks, *(["val_trials_per_task=1"] if args["quick"] else []))
    demos = demonstrations(dagger_cfg)
    # new demonstrations: seeds of their own (collection seed 1 and 2; the recipe's demos used 0)
    new_data = {"bc_more": (Path(args["clean_data"] or out / "data" / "clean"), 0.0, 1),
                "dart": (Path(args["dart_data"] or out / "data" / f"dart_{noise}"), noise, 2)}
    for root, std, seed in new_data.values():
        collect(config("collect", f"episodes_per_task={n * rounds}", "workers=2", f"seed={seed}", f"noise={std}",
                       f"out={root}", *tasks, *short))

    run_dagger(dagger_cfg)  # rollouts, training and validation of every round
    checkpoints = {"bc": ckpt, "dagger": Path(json.loads((out / "dagger" / "rounds.json").read_text())[-1]["policy"])}
    for arm, (root, _, _) in new_data.items():  # the same steps per round, all rounds' worth of data at once
        checkpoints[arm] = continue_training(ckpt, demos + [str(root)], ckpt, out / "train" / arm, steps * rounds, lr, warmup)
    labelled = {"bc": 0, **{arm: load_info(root)["total_frames"] for arm, (root, _, _) in new_data.items()},
                "dagger": sum(load_info(round_dir(dagger_cfg, r) / "data")["total_frames"] for r in range(1, rounds + 1))}

    success = {}
    for arm in ("bc", "bc_more", "dart", "dagger"):
        eval_out = Path(args["bc_eval"]) if arm == "bc" and args["bc_eval"] else out / "eval" / arm
        summary = evaluate(config("config", "eval.policy=checkpoint", f"eval.checkpoint={checkpoints[arm]}",
                                  f"eval.trials_per_task={trials}", f"eval.num_envs={num_envs}", f"eval.out={eval_out}",
                                  *(f"eval.{t}" for t in tasks), *(["eval.max_steps=8"] if args["quick"] else [])))
        success[arm] = (summary["successes"], summary["episodes"])

    rows = ["| arm | new labelled frames | training steps after BC | success (95% CI) | vs BC (95% CI) | vs BC + more demos (95% CI) |",
            "|---|---|---|---|---|---|"]
    result = {}
    for arm, (k, m) in success.items():
        lo, hi = wilson(k, m)
        diffs = []
        for ref in ("bc", "bc_more"):
            kr, mr = success[ref]
            d_lo, d_hi = newcombe(k, m, kr, mr)
            diffs.append("-" if ref == arm or (arm == "bc" and ref == "bc_more") else
                         f"{100 * (k / m - kr / mr):+.1f} ({100 * d_lo:+.1f} to {100 * d_hi:+.1f})")
            if ref == "bc_more" and arm in ("dart", "dagger"):
                result.update({f"{arm}_minus_bc_more": k / m - kr / mr, f"{arm}_ci_low": d_lo, f"{arm}_ci_high": d_hi})
        rows.append(f"| {arm} | {labelled[arm]} | {0 if arm == 'bc' else steps * rounds} | {k}/{m} = {100 * k / m:.1f}% "
                    f"({100 * lo:.1f}-{100 * hi:.1f}) | {diffs[0]} | {diffs[1]} |")
        result[arm] = k / m
    table = "\n".join(rows) + "\n"
    (out / "table.md").write_text(table)
    print(table)
    print("RESULT " + " ".join(f"{k}={v:.4f}" for k, v in result.items()))


if __name__ == "__main__":
    main()

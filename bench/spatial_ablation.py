"""Does spatial knowledge make a better policy? Three arms of the CPU recipe that learns, with the
same 500 demonstrations, action steps, seed and evaluation; only the spatial knowledge differs:

  untuned    the recipe as shipped: `recipe=cpu` 4,000 steps, then 7,000 continued from step 4,000
             (the policy shipped until 2026-12-07 was its continued step 6,000; its protocol episodes are
             docs/results/tiny-libero_spatial-2026-11/episodes.jsonl, reused here unless retrain_untuned=true)
  tuned      the backbone first tuned on grounding questions (`stage=spatial`, spatial_steps of batch
             32), then exactly the same action training
  cotrained  the untuned backbone; the same action training with `train.cotrain_spatial=cotrain`
             questions mixed into every step (0.25 x 32 = 8 a step: ~88k questions over 11,000 steps,
             about what the tuned arm's stage sees)

Each arm's policy at continued step `eval_step` (6,000, the untuned arm's shipped step) runs the
LIBERO-Spatial protocol (50 init states x 10 tasks, the batched engine); success with 95% Wilson
intervals, each difference to the untuned arm with Newcombe's interval. The spatial benchmark of
the untuned and the tuned backbone (held-out tasks) is printed too. Every part resumes: rerun the
same command after a kill. Across sessions (a fresh machine keeps only git): each run's final
weights go to checkpoints/spatial_ablation/<run> (no optimiser state; the spatial stage packed to
the rows it changed, 8 MB) with the digest of the demonstrations, and a later invocation skips
those runs; a re-collected dataset whose digest differs is refused. Their protocol episodes are
kept in docs/results/spatial_ablation/<arm>/ and not run again (retraining an arm: delete both).
Two processes can share the 2 cores (`arms=tuned threads=1` and `arms=cotrained threads=1`,
`train_only=true`); the plain command then evaluates and reports.

python bench/spatial_ablation.py [arms=tuned,cotrained] [threads=2] [train_only=false]
    [spatial_data=data/spatial/libero_spatial_grounding] [spatial_samples=24000] [spatial_steps=3000]
    [cotrain=0.25] [dataset=data/libero_spatial_50] [eval_step=6000] [trials_per_task=50]
    [num_envs=auto] [retrain_untuned=false] [spatial_eval_questions=1000] [out=outputs/spatial_ablation]
    [first_steps=4000] [cont_steps=7000] [tasks=all] [--quick]
--quick: every stage at toy sizes in a temporary folder (one demonstration, a few dozen questions, 2-4
training steps per run, all three arms retrained, one 8-step evaluation episode each): minutes.
Last line: RESULT success_untuned=<f> success_tuned=<f> success_cotrained=<f> delta_tuned=<f>
    delta_tuned_ci_low=<f> delta_tuned_ci_high=<f> delta_cotrained=<f> ... pointing_untuned=<f> pointing_tuned=<f>
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path

from hydra import compose, initialize_config_dir

from eval_rollouts.results import newcombe, wilson
from vla.benchopts import options

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = str(ROOT / "configs")
SHIPPED = ROOT / "checkpoints" / "tiny-libero_spatial"
# the untuned arm as published: the policy shipped until 2026-12-07 (its demonstrations drew on broken scenes;
# the shipped checkpoint has since been continued on corrected ones: re-measuring means retrain_untuned=true)
SHIPPED_EPISODES = ROOT / "docs" / "results" / "tiny-libero_spatial-2026-11" / "episodes.jsonl"
PUBLISHED = ROOT / "checkpoints" / "spatial_ablation"
RESULTS = ROOT / "docs" / "results" / "spatial_ablation"  # each published arm's protocol episodes
DEMOS_DIGEST = "demonstrations.sha256"


def config(name: str, *overrides: str):
    with initialize_config_dir(config_dir=CONFIGS, version_base="1.3"):
        return compose(config_name=name, overrides=list(overrides))


def published(name: str, run, demos: str | None = None) -> Path:
    """The weights `run()` ends with, kept in git under checkpoints/spatial_ablation/<name>: a fresh
    machine keeps nothing else, and every later run starts from weights alone (a new optimiser), so
    the ablation can span sessions without changing the recipe. `demos`: the digest of the
    demonstrations it learned from, kept beside the weights. (The spatial stage's backbone is
    kept packed: pack_stage.)"""
    dest = PUBLISHED / name
    if not (dest / "model.safetensors").is_file():
        src = run()
        tmp = dest.with_name(dest.name + ".tmp")
        shutil.copytree(src, tmp, dirs_exist_ok=True,
                        ignore=shutil.ignore_patterns("trainer_state.json", "optimizer.safetensors"))
        if demos:
            (tmp / DEMOS_DIGEST).write_text(demos + "\n")
        tmp.rename(dest)
    return dest


def stage_model(spatial_data: str):
    """The spatial stage's model as freshly built (same config and seed): what it started from."""
    import torch
    from omegaconf import OmegaConf

    from vla.spatial.generate import read_records
    from vla.spatial.model import build_vqa_model

    cfg = config("config", "stage=spatial", "recipe=cpu", f"train.dataset={spatial_data}")
    torch.manual_seed(cfg.seed)
    return build_vqa_model(OmegaConf.to_container(cfg.model, resolve=True), cfg.seed, read_records(spatial_data, "train"))


def pack_stage(folder: Path, dest: Path, spatial_data: str) -> None:
    """The spatial stage's backbone in a few MB for git: of the 151k-row embedding and LM-head
    matrices only the rows that differ from the fresh build (the frozen embedding has none; the
    answer rows do), the rest of the weights whole; the tokenizer is rebuilt on unpacking."""
    import torch
    from safetensors.torch import save_file
    from transformers import AutoModelForImageTextToText

    full = AutoModelForImageTextToText.from_pretrained(folder, dtype=torch.float32).state_dict()
    fresh = stage_model(spatial_data).lm.state_dict()
    packed = {}
    for k, v in full.items():
        if v.ndim == 2 and v.shape[0] > 100_000:
            rows = torch.nonzero((v != fresh[k]).any(1)).flatten()
            packed[k], packed[k + ".changed_rows"] = v[rows].contiguous(), rows
        else:
            packed[k] = v.contiguous()
    dest.mkdir(parents=True, exist_ok=True)
    save_file(packed, str(dest / "packed.safetensors"))
    shutil.copy(folder / "config.yaml", dest / "config.yaml")


def unpack_stage(packed: Path, dest: Path, spatial_data: str) -> Path:
    """The HF backbone folder again (what backbone_checkpoint= and the spatial benchmark load)."""
    from safetensors.torch import load_file

    if (dest / "model.safetensors").is_file():
        return dest
    model = stage_model(spatial_data)
    state, saved = model.lm.state_dict(), load_file(str(packed / "packed.safetensors"))
    for k, v in saved.items():
        if k.endswith(".changed_rows"):
            continue
        if k + ".changed_rows" in saved:
            state[k][saved[k + ".changed_rows"]] = v
        else:
            state[k] = v
    model.lm.load_state_dict(state)
    model.head_from_lm()
    tmp = dest.with_name(dest.name + ".tmp")
    model.save(tmp)
    shutil.copy(packed / "config.yaml", tmp / "config.yaml")
    tmp.rename(dest)
    return dest


def demonstrations_digest(root: Path) -> str:
    """sha256 of every frame's episode, task and action: a dataset collected again in a later
    session must be the same demonstrations (the expert is deterministic; a changed expert is not)."""
    import hashlib

    import pyarrow.parquet as pq

    h = hashlib.sha256()
    for f in sorted((root / "data").rglob("*.parquet")):
        t = pq.read_table(f, columns=["episode_index", "task_index", "action"])
        for name in t.column_names:
            h.update(t.column(name).combine_chunks().flatten().to_numpy(zero_copy_only=False).tobytes()
                     if name == "action" else t.column(name).to_numpy().tobytes())
    return h.hexdigest()


def train_arm(arm: str, out: Path, dataset: str, threads: int, eval_step: int, extra: list[str],
              first_steps: int = 4000, cont_steps: int = 7000) -> Path:
    """The recipe's two runs: 4,000 steps, then 7,000 from its step 4,000 (new warmup and cosine),
    stopped at `eval_step`: the policy the evaluation takes. Both learn from the same
    demonstrations, checked by digest when the runs fall in different sessions."""
    from vla.train import train
    from vla.training.action import ensure_dataset

    if (PUBLISHED / arm / "model.safetensors").is_file():
        return PUBLISHED / arm
    common = ["recipe=cpu", f"train.dataset={dataset}", "train.eval_trials_per_task=0", "train.save_every=500",
              f"train.max_steps={first_steps}",
              f"train.num_threads={threads}", *extra]
    demos = demonstrations_digest(ensure_dataset(config("config", *common)))
    first = published(f"{arm}_first", lambda: train(config("config", *common, f"train.output_dir={out / 'first'}")), demos)
    recorded = (first / DEMOS_DIGEST).read_text().strip()
    if recorded != demos:
        sys.exit(f"{dataset} is not the dataset {first} learned from (demonstrations digest {demos[:12]} vs "
                 f"{recorded[:12]}): the expert or the collection changed; retrain the arm (delete {first})")
    return published(arm, lambda: train(config("config", *common, f"train.init_from={first}", f"train.max_steps={cont_steps}",
                                               f"train.stop_at={eval_step}", f"train.output_dir={out / 'cont'}")), demos)


def main() -> None:
    from vla.eval import evaluate
    from vla.spatial.eval import evaluate as spatial_eval
    from vla.spatial.generate import generate
    from vla.spatial.questions import GROUNDING
    from vla.train import train

    global PUBLISHED, RESULTS
    args = options(sys.argv[1:], {
        "out": "outputs/spatial_ablation", "arms": "tuned,cotrained", "threads": 2, "dataset": "data/libero_spatial_50",
        "spatial_data": "data/spatial/libero_spatial_grounding", "spatial_samples": 24000, "spatial_steps": 3000,
        "cotrain": 0.25, "eval_step": 6000, "first_steps": 4000, "cont_steps": 7000, "trials_per_task": 50,
        "num_envs": "auto", "retrain_untuned": False, "train_only": False, "spatial_eval_questions": 1000, "tasks": "all"},
        quick={"spatial_samples": 30, "spatial_steps": 2, "eval_step": 4, "first_steps": 2, "cont_steps": 4,
               "trials_per_task": 1, "num_envs": "1", "retrain_untuned": True, "spatial_eval_questions": 4, "tasks": "0"})
    spatial_gen = [f"task_types=[{','.join(GROUNDING)}]"]
    eval_extra = [] if args["tasks"] == "all" else [f"eval.tasks=[{args['tasks']}]"]
    if args["quick"]:  # a folder of its own: never the published arms or the shipped demonstrations
        import tempfile

        from vla.dataset.collection import collect_demos

        tmp = Path(tempfile.mkdtemp(prefix="spatial_ablation_quick_"))
        PUBLISHED, RESULTS = tmp / "published", tmp / "results"
        args.update(out=str(tmp / "out"), spatial_data=str(tmp / "spatial"), dataset=str(
            collect_demos("libero_spatial", tmp / "demos", 1, ["agentview", "robot0_eye_in_hand"], 128, tasks=[0])))
        spatial_gen += ["scenes_per_shard=2", "test_every=2"]
        eval_extra += ["eval.max_steps=8"]
    out, arms, threads = Path(args["out"]), args["arms"].split(","), args["threads"]
    dataset, spatial_data, eval_step = args["dataset"], args["spatial_data"], args["eval_step"]
    retrain_untuned = args["retrain_untuned"]
    times = {}

    t0 = time.time()
    generate(config("spatial", f"samples={args['spatial_samples']}", f"out={spatial_data}", *spatial_gen))
    times["spatial data"] = time.time() - t0

    stage = None
    train_only = args["train_only"]
    if "tuned" in arms or not train_only:  # the report needs the stage's checkpoint too
        t0 = time.time()
        packed = PUBLISHED / "spatial_stage"
        if not (packed / "packed.safetensors").is_file():
            pack_stage(train(config(
                "config", "stage=spatial", "recipe=cpu", f"train.dataset={spatial_data}",
                f"train.max_steps={args['spatial_steps']}", "train.warmup_steps=100", "train.save_every=500",
                "train.eval_every=1000", f"train.num_threads={threads}", f"train.output_dir={out / 'spatial_stage'}",
                *(["train.eval_questions=4"] if args["quick"] else []))),
                packed, spatial_data)
        stage = unpack_stage(packed, out / "spatial_stage_backbone", spatial_data)
        times["spatial stage"] = time.time() - t0
    extra = {"tuned": [f"backbone_checkpoint={stage}"],
             "cotrained": [f"train.cotrain_spatial={args['cotrain']}", f"train.spatial_dataset={spatial_data}"],
             "untuned": []}
    checkpoints = {"untuned": SHIPPED}
    for arm in arms + (["untuned"] if retrain_untuned else []):
        t0 = time.time()
        checkpoints[arm] = train_arm(arm, out / arm, dataset, threads, eval_step, extra[arm], args["first_steps"],
                                     args["cont_steps"])
        times[f"{arm} action training"] = time.time() - t0
    if train_only:
        return
    # protocol episodes already measured (kept in git: a fresh machine keeps nothing else) are not
    # run again: the shipped policy's own, and each published arm's
    measured = {arm: RESULTS / arm / "episodes.jsonl" for arm in ("untuned", "tuned", "cotrained")
                if (PUBLISHED / arm / "model.safetensors").is_file()}
    if not retrain_untuned:
        measured["untuned"] = SHIPPED_EPISODES
    for arm, episodes in measured.items():
        if episodes.is_file() and not (out / arm / "eval" / "episodes.jsonl").exists():
            (out / arm / "eval").mkdir(parents=True, exist_ok=True)
            shutil.copy(episodes, out / arm / "eval" / "episodes.jsonl")
    success = {}
    for arm in ("untuned", "tuned", "cotrained"):
        summary = evaluate(config("config", "eval.policy=checkpoint", f"eval.checkpoint={checkpoints[arm]}",
                                  f"eval.trials_per_task={args['trials_per_task']}",
                                  f"eval.num_envs={args['num_envs']}", f"eval.out={out / arm / 'eval'}", *eval_extra))
        success[arm] = (summary["successes"], summary["episodes"])

    # the spatial benchmark (held-out tasks) of the recipe's backbone, untuned (seed 0) and tuned
    recipe = config("config", "recipe=cpu")
    model = [f"model.vocab={recipe.model.vocab}"] + [f"++model.tiny.{k}={v}" for k, v in recipe.model.tiny.items()]
    bench = {}
    for name, ckpt in (("untuned", "null"), ("tuned", stage)):
        bench[name] = spatial_eval(config("spatial_eval", *model, f"checkpoint={ckpt}", f"dataset={spatial_data}",
                                          f"resolution={recipe.train.resolution}",
                                          f"max_questions={args['spatial_eval_questions']}",
                                          f"out={out / 'spatial_eval' / name}"))["overall"]
    (out / "result.json").write_text(json.dumps({"success": success, "spatial_benchmark": bench}, indent=2))

    for name, seconds in times.items():
        print(f"{name}: {seconds / 60:.1f} min (this invocation)")
    for name, b in bench.items():
        print(f"spatial benchmark, {name} backbone: pointing in mask {b['pointing_accuracy']:.3f} (chance "
              f"{b['pointing_chance']:.3f}, blind {b['pointing_blind']:.3f}), multiple choice {b['choice_accuracy']:.3f} "
              f"(blind {b['choice_blind']:.3f}), numeric MRA {b['numeric_mra']:.3f} (blind {b['numeric_blind']:.3f})")
    result = []
    for arm, (k, n) in success.items():
        lo, hi = wilson(k, n)
        print(f"libero_spatial success, {arm}: {k}/{n} = {k / n:.3f} [{lo:.3f}, {hi:.3f}]")
        result.append(f"success_{arm}={k / n:.4f}")
    kb, nb = success["untuned"]
    for arm in ("tuned", "cotrained"):
        k, n = success[arm]
        lo, hi = newcombe(k, n, kb, nb)
        print(f"{arm} - untuned: {k / n - kb / nb:+.3f} (Newcombe 95% CI {lo:+.3f} to {hi:+.3f})")
        result += [f"delta_{arm}={k / n - kb / nb:.4f}", f"delta_{arm}_ci_low={lo:.4f}", f"delta_{arm}_ci_high={hi:.4f}"]
    result += [f"pointing_{name}={b['pointing_accuracy']:.4f}" for name, b in bench.items()]
    print("RESULT " + " ".join(result))


if __name__ == "__main__":
    main()

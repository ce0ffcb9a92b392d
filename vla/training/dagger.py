"""DAgger with the scripted expert as the teacher (Ross et al., 2011).

Round r: roll out the round r-1 policy in the batched engine's workers on fresh layouts (never
the evaluation init states, never the validation layouts), label every state it visits with
the expert's action (the expert plans again from wherever the policy left the scene), append the
rollouts to a LeRobot v3 dataset of that round (`learner_acted` per frame; the round and beta in
meta/info.json), continue training from the round r-1 checkpoint on the demonstrations plus
every round so far, and validate on fresh layouts. Round 0 is the starting checkpoint.

Every stage resumes after a kill: rollouts (rollouts.jsonl, one line per episode, and their
dataset), training (vla.train's exact resume) and validation (vla.eval's episodes.jsonl).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from omegaconf import DictConfig, OmegaConf

EPISODES_PER_ROUND = 1000  # episode keys of round r are (task, (r - 1) * 1000 + j): fresh layouts per round


def round_dir(cfg: DictConfig, r: int) -> Path:
    return Path(cfg.out) / f"round_{r:02d}"


def expert_drives(cfg: DictConfig, r: int) -> float:
    """beta of round r: the chance that the expert, not the policy, drives a chunk."""
    return float(cfg.beta) * float(cfg.beta_decay) ** (r - 1)


def checkpoint_config(checkpoint: Path) -> DictConfig:
    """The training config a checkpoint was written with: the rounds train the same architecture."""
    path = Path(checkpoint) / "config.yaml"
    if not path.is_file():
        raise ValueError(f"checkpoint={checkpoint}: no policy checkpoint there (config.yaml missing)")
    return OmegaConf.load(path)


def check(cfg: DictConfig) -> None:
    if not 0.0 <= float(cfg.beta) <= 1.0 or not 0.0 <= float(cfg.beta_decay) <= 1.0:
        raise ValueError(f"beta and beta_decay must lie in 0..1, got {cfg.beta} and {cfg.beta_decay}")
    if not 1 <= int(cfg.rounds) <= 9:
        raise ValueError(f"rounds must be 1..9, got {cfg.rounds}")
    if not 1 <= int(cfg.episodes_per_task) <= EPISODES_PER_ROUND:
        raise ValueError(f"episodes_per_task must be 1..{EPISODES_PER_ROUND}, got {cfg.episodes_per_task}")
    if int(cfg.steps_per_round) < 1:
        raise ValueError(f"steps_per_round must be positive, got {cfg.steps_per_round}")


def collect_rollouts(cfg: DictConfig, r: int, policy_path: Path) -> dict:
    """Round r's relabelled rollouts of the policy at policy_path; returns their summary."""
    from envs.suites import get_suite
    from eval_rollouts import engine
    from eval_rollouts.results import ResultsLog
    from eval_rollouts.worker import EnvSpec
    from policies import VLAPolicy

    from ..dataset.collection import dataset_features
    from ..dataset.format import LeRobotWriter, vector_feature
    from ..dataset.reader import GRASPS_KEY
    from ..eval import num_envs, render_quality

    suite = get_suite(cfg.suite.name)
    tasks = list(range(len(suite.tasks))) if cfg.tasks is None else [suite.task(t).index for t in cfg.tasks]
    policy = VLAPolicy.from_checkpoint(policy_path)
    cameras = list(policy.spec.cameras)
    resolution = int(policy.spec.camera_resolution or policy.spec.resolution)
    quality, beta, d = render_quality("auto", policy), expert_drives(cfg, r), round_dir(cfg, r)
    features = dataset_features(cameras, resolution)
    features["learner_acted"] = vector_feature(["learner_acted"], "int64")  # 1: the policy drove this step
    # the count of the commands that ran (the learner's), which the labels' own would not give
    features[GRASPS_KEY] = vector_feature(["grasps"], "int64")
    writer = LeRobotWriter(d / "data", fps=suite.control_freq, features=features,
                           recording={"render_quality": quality, "dagger_round": r, "expert_drives": beta,
                                      "policy": str(policy_path)})
    log = ResultsLog(d / "rollouts.jsonl")
    # each labelled record owns the dataset episode of its rank: a kill after logging an episode
    # and before its frames landed drops that record, so the episode runs again
    ranks = [i for i, rec in enumerate(log.records) if rec.get("labelled_steps")]
    if len(ranks) > writer.num_episodes:
        unwritten = set(ranks[writer.num_episodes:])
        log.rewrite([rec for i, rec in enumerate(log.records) if i not in unwritten])

    def write(rec: dict, labelled: list[dict]) -> None:
        if not labelled:
            return
        frames = {f"observation.images.{c}": np.stack([s["images"][c] for s in labelled]) for c in cameras}
        frames["observation.state"] = np.stack([s["state"] for s in labelled]).astype(np.float32)
        frames["action"] = np.stack([s["action"] for s in labelled]).astype(np.float32)
        frames["learner_acted"] = np.array([[s["learner_acted"]] for s in labelled], np.int64)
        frames[GRASPS_KEY] = np.array([[s["grasps"]] for s in labelled], np.int64)
        writer.add_episode(frames, task=suite.tasks[rec["task"]].instruction)

    first = (r - 1) * EPISODES_PER_ROUND
    episodes = [(t, first + j) for t in tasks for j in range(cfg.episodes_per_task)]
    spec = EnvSpec(cfg.suite.name, tuple(cameras), resolution, quality, layouts="dagger", label=True, expert_drives=beta)
    engine.run(policy, spec, episodes, log, num_envs=num_envs(cfg.num_envs), on_episode=write)
    wanted = set(episodes)
    records = [rec for rec in log.records if (rec["task"], rec["init"]) in wanted]
    learner = int(learner_acted(d / "data").sum()) if writer.num_frames else 0
    return {"rollouts": len(records), "rollout_successes": sum(rec["success"] for rec in records),
            "labelled_frames": writer.num_frames, "learner_frames": learner}


def learner_acted(root: Path) -> np.ndarray:
    """A DAgger dataset's learner_acted column (1 where the policy drove the step)."""
    import pyarrow.parquet as pq

    from ..dataset.format import column_to_numpy

    files = sorted((root / "data").rglob("*.parquet"))
    return np.concatenate([column_to_numpy(pq.read_table(f, columns=["learner_acted"])["learner_acted"]) for f in files])


def continue_training(start: Path, datasets: list[str], init_from: Path, output_dir: Path, steps: int, lr: float,
                      warmup_steps: int, overrides: dict | None = None) -> Path:
    """Train the architecture and recipe the checkpoint `start` was trained with, from init_from's
    weights (and normalisation), on `datasets`, for `steps` of a fresh warmup + cosine schedule;
    resumes like any vla.train run. Returns the final checkpoint. DAgger's rounds and the
    comparisons against them (bench/expert_in_the_loop.py) all train through here."""
    from ..train import train
    from .loop import checkpoints

    base = checkpoint_config(start)
    done = checkpoints(Path(output_dir))
    if done and int(done[-1].name.split("_")[-1]) >= steps:
        return done[-1]  # finished: skip loading the datasets just to find nothing left to do
    cfg = OmegaConf.merge(base, {"train": {
        "dataset": [str(d) for d in datasets], "init_from": str(init_from), "output_dir": str(output_dir),
        "max_steps": int(steps), "warmup_steps": int(warmup_steps), "lr": float(lr), "eval_trials_per_task": 0,
        "resume": True, "collect_if_missing": False, "save_every": min(int(steps), int(base.train.save_every))}},
        {"train": overrides or {}})
    return train(cfg)


def demonstrations(cfg: DictConfig) -> list[str]:
    """The demonstrations every round trains on: base_datasets, else the checkpoint's own data."""
    demos = cfg.base_datasets if cfg.base_datasets is not None else checkpoint_config(cfg.checkpoint).train.dataset
    return [str(d) for d in demos] if OmegaConf.is_list(demos) else [str(demos)]


def train_round(cfg: DictConfig, r: int, init_from: Path) -> Path:
    """Continue training from init_from on the demonstrations plus rounds 1..r."""
    datasets = demonstrations(cfg) + [str(round_dir(cfg, q) / "data") for q in range(1, r + 1)]
    return continue_training(Path(cfg.checkpoint), datasets, init_from, round_dir(cfg, r) / "train",
                             int(cfg.steps_per_round), float(cfg.lr), int(cfg.warmup_steps),
                             OmegaConf.to_container(cfg.train, resolve=True))


def validate(cfg: DictConfig, r: int, checkpoint: Path) -> dict:
    from ..eval import evaluate

    ecfg = OmegaConf.merge(checkpoint_config(cfg.checkpoint), {"suite": OmegaConf.to_container(cfg.suite, resolve=True), "eval": {
        "policy": "checkpoint", "checkpoint": str(checkpoint), "trials_per_task": int(cfg.val_trials_per_task),
        "layouts": "random", "tasks": cfg.tasks, "num_envs": cfg.num_envs, "save_videos": 1, "replan_steps": None,
        "max_steps": None, "render_quality": "auto", "python": None, "out": str(round_dir(cfg, r) / "validation")}})
    return evaluate(ecfg)


def run_dagger(cfg: DictConfig) -> list[dict]:
    """All rounds (each stage skipped when already complete); returns the per-round table rows."""
    from torch.utils.tensorboard import SummaryWriter

    from eval_rollouts.results import wilson

    check(cfg)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    tb = SummaryWriter(str(out / "tb"))
    policy = Path(cfg.checkpoint)
    rows = []
    for r in range(0, int(cfg.rounds) + 1):
        row = {"round": r, "policy": str(policy)}
        if r > 0:
            print(f"DAgger round {r}: rollouts of {policy} (expert drives {expert_drives(cfg, r):.2f} of the chunks)")
            row.update(expert_drives=expert_drives(cfg, r), **collect_rollouts(cfg, r, policy))
            policy = train_round(cfg, r, policy)
            row.update(policy=str(policy), train_steps=int(cfg.steps_per_round))
        val = validate(cfg, r, policy)
        lo, hi = wilson(val["successes"], val["episodes"])
        row.update(validation_successes=val["successes"], validation_episodes=val["episodes"], validation_ci95=[lo, hi])
        rows.append(row)
        tb.add_scalar("dagger/validation_success", val["success_rate"], r)
        if r > 0:
            tb.add_scalar("dagger/rollout_success", row["rollout_successes"] / max(1, row["rollouts"]), r)
            tb.add_scalar("dagger/labelled_frames", row["labelled_frames"], r)
        write_table(out, rows)
    tb.close()
    return rows


def write_table(out: Path, rows: list[dict]) -> None:
    (out / "rounds.json").write_text(json.dumps(rows, indent=2))
    lines = ["| round | expert drives | rollouts solved | labelled frames (policy drove) | validation success (95% CI) | checkpoint |",
             "|---|---|---|---|---|---|"]
    for row in rows:
        k, n, (lo, hi) = row["validation_successes"], row["validation_episodes"], row["validation_ci95"]
        roll = f"{row['rollout_successes']}/{row['rollouts']}" if row["round"] else "-"
        frames = f"{row['labelled_frames']} ({row['learner_frames']})" if row["round"] else "-"
        beta = f"{row['expert_drives']:.2f}" if row["round"] else "-"
        lines.append(f"| {row['round']} | {beta} | {roll} | {frames} | {k}/{n} = {100 * k / max(1, n):.0f}% "
                     f"({100 * lo:.0f}-{100 * hi:.0f}%) | {row['policy']} |")
    (out / "rounds.md").write_text("\n".join(lines) + "\n")

"""Evaluate a policy by batched rollouts: `python -m vla.eval eval.checkpoint=PATH suite=libero_spatial`.

Also `eval.policy=scripted` (the expert) and `eval.policy=random` for the baselines. Results go
to `eval.out`: episodes.jsonl (one line per finished episode; rerunning resumes), success.md /
success.json (per task, with 95% Wilson intervals), success.png and videos/*.mp4.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf


def load_policy(kind: str, checkpoint: str | None, suite_cfg, chunk_size: int = 8, seed: int = 0):
    """The policy named by `kind` (checkpoint | scripted | random) -> (policy, cameras, resolution,
    chunk length). Shared by evaluation and the policy server."""
    if kind == "scripted":
        from eval_rollouts.engine import ExpertPolicy

        return ExpertPolicy(), list(suite_cfg.cameras), int(suite_cfg.resolution), 1
    if kind == "random":
        from policies import RandomPolicy

        return RandomPolicy(chunk_size=chunk_size, seed=seed), list(suite_cfg.cameras), int(suite_cfg.resolution), chunk_size
    if kind == "checkpoint":
        if not checkpoint:
            raise ValueError("policy=checkpoint needs a checkpoint folder from vla.train (checkpoint=PATH)")
        from policies import VLAPolicy

        policy = VLAPolicy.from_checkpoint(checkpoint)
        return policy, list(policy.spec.cameras), policy.spec.camera_resolution or policy.spec.resolution, policy.spec.chunk_size
    raise ValueError(f"policy must be checkpoint, scripted or random, not {kind!r}")


def render_quality(wanted: str, policy) -> str:
    """The simulator's render setting for evaluation: `auto` takes the one the policy's training
    images were rendered with (lowpoly when unknown); an explicit setting that differs warns,
    since a policy sees other pixels than it was trained on."""
    from envs.lowpoly import DEFAULT_RENDER, RENDER_QUALITIES

    trained = getattr(getattr(policy, "spec", None), "render_quality", None)
    if wanted == "auto":
        return trained or DEFAULT_RENDER
    if wanted not in RENDER_QUALITIES:
        raise ValueError(f"eval.render_quality must be auto or one of {RENDER_QUALITIES}, not {wanted!r}")
    if trained and trained != wanted:
        warnings.warn(f"evaluating with render_quality={wanted}, but the policy was trained on images rendered "
                      f"with {trained}: success rates may not be comparable", stacklevel=2)
    return wanted


def num_envs(setting, backend: str = "local", ray_address: str | None = None) -> int:
    """eval.num_envs: a number, or auto = the cores this process may use (bench/eval.py: on 2
    cores, 2 workers beat 4 and 8, which only share the cores and pay for their scene builds);
    with backend=ray, the CPUs of the whole cluster."""
    if setting == "auto" and backend == "ray":
        import ray

        from eval_rollouts.ray_workers import connect

        connect(ray_address)
        return max(1, int(ray.cluster_resources().get("CPU", 1)))
    if setting == "auto":
        import os

        return len(os.sched_getaffinity(0))
    if not isinstance(setting, int) or setting < 1:
        raise ValueError(f"eval.num_envs must be a positive number or auto, not {setting!r}")
    return setting


def make_policy(cfg: DictConfig):
    # random: chunks as long as the open-loop horizon, so skipped renders make the baseline cheap
    policy, cameras, resolution, _ = load_policy(cfg.eval.policy, cfg.eval.checkpoint, cfg.suite,
                                                 int(cfg.eval.replan_steps or 8), cfg.seed)
    return policy, cameras, resolution


def evaluate(cfg: DictConfig) -> dict:
    from envs.suites import get_suite
    from eval_rollouts import engine
    from eval_rollouts.results import ResultsLog, summarize, write_reports
    from eval_rollouts.worker import EnvSpec, check_layout_seeds

    suite = get_suite(cfg.suite.name)
    tasks = list(range(len(suite.tasks))) if cfg.eval.tasks is None else [suite.task(t).index for t in cfg.eval.tasks]
    if cfg.eval.layouts not in ("fixed", "random"):
        raise ValueError(f"eval.layouts must be fixed (the suite's init states) or random (validation layouts), not {cfg.eval.layouts!r}")
    if cfg.eval.layouts == "fixed" and not 1 <= cfg.eval.trials_per_task <= suite.init_states_per_task:
        raise ValueError(f"eval.trials_per_task must be 1..{suite.init_states_per_task}, not {cfg.eval.trials_per_task}")
    base = cfg.eval.get("layout_seed_base")
    check_layout_seeds(cfg.eval.layouts, base, max(tasks) + 1, cfg.eval.trials_per_task)
    from envs.perturb import parse as parse_perturbations

    perturb = tuple(parse_perturbations(cfg.eval.get("perturb")))
    if perturb and suite.simulator != "libero":
        raise ValueError(f"eval.perturb applies to LIBERO suites; suite={cfg.suite.name} runs in {suite.simulator}")
    instructions = {t: suite.tasks[t].instruction for t in tasks}
    if cfg.eval.policy == "checkpoint" and cfg.eval.checkpoint and not cfg.eval.get("allow_unseen_tasks"):
        check_trained_on(cfg.eval.checkpoint, cfg.suite.name, instructions)
    policy, cameras, resolution = make_policy(cfg)
    out = Path(cfg.eval.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    episodes = [(t, k) for t in tasks for k in range(cfg.eval.trials_per_task)]
    spec = EnvSpec(cfg.suite.name, tuple(cameras), int(resolution), render_quality(cfg.eval.render_quality, policy),
                   cfg.eval.max_steps, expert=cfg.eval.policy == "scripted", layouts=cfg.eval.layouts,
                   layout_seed_base=base, perturb=perturb)
    log = ResultsLog(out / "episodes.jsonl")
    videos = {(t, k) for t in tasks for k in range(min(cfg.eval.save_videos, cfg.eval.trials_per_task))}
    backend, address = cfg.eval.get("backend", "local"), cfg.eval.get("ray_address")
    engine.run(policy, spec, episodes, log, num_envs=num_envs(cfg.eval.num_envs, backend, address),
               replan_steps=cfg.eval.replan_steps, video_dir=out / "videos", video_episodes=videos,
               python=cfg.eval.python or suite.python, backend=backend, ray_address=address)
    wanted = set(episodes)
    summary = summarize([r for r in log.records if (r["task"], r["init"]) in wanted], instructions)
    title = f"{cfg.suite.name}, policy {cfg.eval.policy}" + (f" ({cfg.eval.checkpoint})" if cfg.eval.policy == "checkpoint" else "")
    write_reports(out, summary, title)
    print((out / "success.md").read_text())
    print(f"results: {out}")
    return summary


def check_trained_on(checkpoint: str, suite: str, instructions: dict[int, str]) -> None:
    """A checkpoint evaluated on tasks it never learned measures nothing: ValueError when none of
    the evaluated tasks is among its training instructions, a warning when only some are."""
    from policies.checkpoint import check_checkpoint, trained_tasks
    from policies.transforms import instruction_text

    found = trained_tasks(check_checkpoint(checkpoint))
    if found is None:
        return
    trained, trained_suite = found
    known = {instruction_text(t) for t in trained}
    unseen = [t for t, text in instructions.items() if instruction_text(text) not in known]
    where = f"suite={trained_suite}" if trained_suite else f"{len(trained)} tasks"
    if len(unseen) == len(instructions):
        raise ValueError(f"{checkpoint} was trained on {where}, and none of the {len(instructions)} evaluated tasks of "
                         f"suite={suite} is among its instructions: evaluate it with suite={trained_suite or '<its suite>'}, "
                         f"or set eval.allow_unseen_tasks=true to measure it on unseen tasks anyway")
    if unseen:
        warnings.warn(f"{checkpoint} was trained on {where}; tasks {unseen} of suite={suite} are not among its "
                      f"instructions (their success measures generalisation)", stacklevel=2)


def check_errors(summary: dict, max_fraction: float, out) -> None:
    """A table with more environment failures than `max_fraction` of its episodes measures the
    simulator, not the policy: ValueError (vla.eval exits non-zero; the table is still written)."""
    ran = summary["episodes"] + summary["errors"]
    if summary["errors"] > max_fraction * ran:
        raise ValueError(f"{summary['errors']} of {ran} episodes failed in the environment, more than "
                         f"eval.max_error_fraction={max_fraction}: the table is not a measurement of the policy "
                         f"(causes in {out}/episodes.jsonl; a rerun retries those episodes)")


@hydra.main(config_path="../configs", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> None:
    from policies.checkpoint import CheckpointError

    try:
        check_errors(evaluate(cfg), cfg.eval.max_error_fraction, cfg.eval.out)
    except (ValueError, CheckpointError) as e:
        raise SystemExit(f"vla.eval: {e}") from None


if __name__ == "__main__":
    main()

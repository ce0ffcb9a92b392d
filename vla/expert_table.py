"""Success of the scripted expert per task over the fixed init states (physics only, no cameras).

python -m vla.expert_table suite=libero_spatial trials_per_task=50 workers=2
Writes outputs/expert/<suite>.jsonl (one line per episode, resumable) and <suite>.md (the table).
"""

from __future__ import annotations

import json
import multiprocessing as mp
from pathlib import Path

import hydra
from omegaconf import DictConfig
from tqdm import tqdm


def _run_task(args):
    suite, task_index, init_indices, handover = args
    from envs import UnsupportedTask
    from envs.episodes import run_expert_episode, run_handover_episode
    from envs.libero_env import LiberoEnv

    env = LiberoEnv(suite, task_index, camera_obs=False)
    out = []
    for k in init_indices:
        try:
            if handover:
                success, before, steps = run_handover_episode(env, init_state_index=k, disturb=handover)
                out.append({"task": task_index, "init": k, "success": success, "steps": steps, "handover_at": before})
            else:
                success, steps, _ = run_expert_episode(env, init_state_index=k)
                out.append({"task": task_index, "init": k, "success": success, "steps": steps})
        except UnsupportedTask as e:
            out.append({"task": task_index, "init": k, "success": False, "steps": 0, "unsupported": str(e)})
    env.close()
    return out


def expert_table(cfg: DictConfig) -> str:
    """Run (or resume) the expert over the init states; returns the Markdown table."""
    from envs.suites import get_suite

    suite, trials, workers = cfg.suite.name, int(cfg.trials_per_task), int(cfg.workers)
    if trials < 1 or workers < 1:
        raise ValueError(f"trials_per_task and workers must be >= 1, got {trials} and {workers}")
    s = get_suite(suite)
    if s.simulator != "libero":
        raise ValueError(f"the expert table runs LIBERO suites in this interpreter; for {suite} run "
                         f"`python -m vla.eval suite={suite} eval.policy=scripted` (its env workers run under RoboCasa's)")
    tasks = list(range(len(s.tasks))) if cfg.tasks is None else [int(t) for t in cfg.tasks]
    bad = [t for t in tasks if not 0 <= t < len(s.tasks)]
    if bad:
        raise ValueError(f"tasks {bad} out of range: {suite} has tasks 0..{len(s.tasks) - 1}")
    handover = cfg.get("handover")
    if handover not in (None, "random", "interrupt"):
        raise ValueError(f"handover must be null, random or interrupt, got {handover!r}")
    out_dir = Path(cfg.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    name = suite + (f"-handover-{handover}" if handover else "")
    log = out_dir / f"{name}.jsonl"

    done = {(r["task"], r["init"]): r for r in map(json.loads, log.read_text().splitlines())} if log.exists() else {}
    # work units of 5 episodes so results land (and the bar moves) often
    units = []
    for t in tasks:
        todo = [k for k in range(trials) if (t, k) not in done]
        units += [(suite, t, todo[i:i + 5], handover) for i in range(0, len(todo), 5)]
    have = sum((t, k) in done for t in tasks for k in range(trials))
    bar = tqdm(total=len(tasks) * trials, initial=have, desc=f"expert {name}", unit="ep")
    with mp.get_context("spawn").Pool(workers) as pool, log.open("a") as f:
        for rows in pool.imap_unordered(_run_task, units):
            for r in rows:
                done[(r["task"], r["init"])] = r
                f.write(json.dumps(r) + "\n")
            f.flush()
            bar.update(len(rows))
            bar.set_postfix(success=f"{sum(r['success'] for r in done.values()) / len(done):.3f}")
    bar.close()

    what = f"expert success after a {handover} handover" if handover else "expert success"
    lines = [f"| task | instruction | {what} (of {trials}) |", "|---|---|---|"]
    total = 0
    for t in tasks:
        task = s.tasks[t]
        rows = [done[(t, k)] for k in range(trials) if (t, k) in done]
        ok = sum(r["success"] for r in rows)
        total += ok
        lines.append(f"| {t} | {task.instruction} | {ok}/{len(rows)} ({100 * ok / max(1, len(rows)):.0f}%) |")
    lines.append(f"| all | | {total}/{len(tasks) * trials} ({100 * total / (len(tasks) * trials):.1f}%) |")
    table = "\n".join(lines) + "\n"
    (out_dir / f"{name}.md").write_text(table)
    return table


@hydra.main(config_path="../configs", config_name="expert_table", version_base="1.3")
def main(cfg: DictConfig) -> None:
    try:
        print(expert_table(cfg))
    except ValueError as e:
        raise SystemExit(f"vla.expert_table: {e}") from None


if __name__ == "__main__":
    main()

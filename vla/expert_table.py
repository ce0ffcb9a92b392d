"""Success of the scripted expert per task over the fixed init states (physics only, no cameras).

python -m vla.expert_table suite=libero_spatial trials_per_task=50 workers=2
Writes outputs/expert/<suite>.jsonl (one line per episode, resumable) and <suite>.md (the table).
"""

from __future__ import annotations

import json
import multiprocessing as mp
import sys
from pathlib import Path

from tqdm import tqdm


def _run_task(args):
    suite, task_index, init_indices = args
    from envs.experts import UnsupportedTask, run_expert_episode
    from envs.libero_env import LiberoEnv

    env = LiberoEnv(suite, task_index, camera_obs=False)
    out = []
    for k in init_indices:
        try:
            success, steps, _ = run_expert_episode(env, init_state_index=k)
            out.append({"task": task_index, "init": k, "success": success, "steps": steps})
        except UnsupportedTask as e:
            out.append({"task": task_index, "init": k, "success": False, "steps": 0, "unsupported": str(e)})
    env.close()
    return out


def main(argv: list[str]) -> None:
    opts = dict(a.split("=", 1) for a in argv)
    suite = opts.get("suite", "libero_spatial")
    trials = int(opts.get("trials_per_task", 50))
    workers = int(opts.get("workers", 2))
    out_dir = Path(opts.get("out", "outputs/expert"))
    out_dir.mkdir(parents=True, exist_ok=True)
    log = out_dir / f"{suite}.jsonl"

    from envs.suites import get_suite

    s = get_suite(suite)
    done = {(r["task"], r["init"]): r for r in map(json.loads, log.read_text().splitlines())} if log.exists() else {}
    # work units of 5 episodes so results land (and the bar moves) often
    units = []
    for t in range(len(s.tasks)):
        todo = [k for k in range(trials) if (t, k) not in done]
        units += [(suite, t, todo[i:i + 5]) for i in range(0, len(todo), 5)]
    bar = tqdm(total=len(s.tasks) * trials, initial=len(done), desc=f"expert {suite}", unit="ep")
    with mp.get_context("spawn").Pool(workers) as pool, log.open("a") as f:
        for rows in pool.imap_unordered(_run_task, units):
            for r in rows:
                done[(r["task"], r["init"])] = r
                f.write(json.dumps(r) + "\n")
            f.flush()
            bar.update(len(rows))
            bar.set_postfix(success=f"{sum(r['success'] for r in done.values()) / len(done):.3f}")
    bar.close()

    lines = [f"| task | instruction | expert success (of {trials}) |", "|---|---|---|"]
    total = 0
    for t, task in enumerate(s.tasks):
        rows = [done[(t, k)] for k in range(trials) if (t, k) in done]
        ok = sum(r["success"] for r in rows)
        total += ok
        lines.append(f"| {t} | {task.instruction} | {ok}/{len(rows)} ({100 * ok / max(1, len(rows)):.0f}%) |")
    lines.append(f"| all | | {total}/{len(s.tasks) * trials} ({100 * total / (len(s.tasks) * trials):.1f}%) |")
    (out_dir / f"{suite}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main(sys.argv[1:])

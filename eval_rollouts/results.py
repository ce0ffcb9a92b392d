"""Episode results on disk: one JSON line per finished episode (written as it completes, so a
killed evaluation resumes without re-running or double-counting), and the success table."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval of a success rate k/n."""
    if n == 0:
        return 0.0, 1.0
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def newcombe(k1: int, n1: int, k2: int, n2: int) -> tuple[float, float]:
    """95% interval of the difference of two independent success rates k1/n1 - k2/n2, from their
    Wilson intervals (Newcombe 1998, method 10)."""
    p1, p2 = k1 / n1, k2 / n2
    (l1, u1), (l2, u2) = wilson(k1, n1), wilson(k2, n2)
    d = p1 - p2
    return d - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2), d + math.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2)


class ResultsLog:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.records: list[dict] = []
        if self.path.exists():
            for line in self.path.read_text().splitlines():
                try:
                    self.records.append(json.loads(line))
                except json.JSONDecodeError:
                    break  # a line cut by a kill: that episode runs again
            # an episode the environment failed (not the policy) runs again on a rerun
            self.rewrite([r for r in self.records if "error" not in r])

    def rewrite(self, records: list[dict]) -> None:
        """Keep only these records (the episodes left out run again)."""
        self.records = list(records)
        self.path.write_text("".join(json.dumps(r) + "\n" for r in self.records))

    @property
    def done(self) -> set[tuple[int, int]]:
        return {(r["task"], r["init"]) for r in self.records}

    def add(self, record: dict) -> None:
        self.records.append(record)
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")
            f.flush()
            os.fsync(f.fileno())


def summarize(records: list[dict], instructions: dict[int, str]) -> dict:
    """Success per task and overall. Episodes the environment failed (an "error" in the record:
    the simulator crashed twice, not the policy) are counted apart and left out of every rate."""
    rows = []
    for t in sorted({r["task"] for r in records}):
        rs = [r for r in records if r["task"] == t and "error" not in r]
        errors = sum(r["task"] == t and "error" in r for r in records)
        k = sum(r["success"] for r in rs)
        lo, hi = wilson(k, len(rs))
        rows.append({"task": t, "instruction": instructions.get(t, ""), "successes": k, "episodes": len(rs),
                     "errors": errors, "success_rate": k / len(rs) if rs else 0.0, "ci95": [lo, hi]})
        goals = [r["goals"] for r in rs if "goals" in r]
        if goals and max(n for _, n in goals) > 1:  # a multi-goal task (LIBERO-10): how far its episodes got
            rows[-1]["goals_reached"] = sum(k / n for k, n in goals) / len(goals)
    k, n = sum(r["successes"] for r in rows), sum(r["episodes"] for r in rows)
    lo, hi = wilson(k, n)
    return {"tasks": rows, "successes": k, "episodes": n, "errors": sum(r["errors"] for r in rows),
            "success_rate": k / n if n else 0.0, "ci95": [lo, hi],
            "average_task_success": sum(r["success_rate"] for r in rows) / len(rows) if rows else 0.0}


def markdown(summary: dict, title: str) -> str:
    lines = [f"**{title}**: {summary['successes']}/{summary['episodes']} "
             f"({100 * summary['success_rate']:.1f}%, 95% CI {100 * summary['ci95'][0]:.1f}-{100 * summary['ci95'][1]:.1f})", "",
             "| task | instruction | success | 95% CI | errors |", "|---|---|---|---|---|"]
    partial = any("goals_reached" in r for r in summary["tasks"])
    if partial:  # multi-goal tasks: the share of their goal predicates an episode reached, on average
        lines[2:4] = ["| task | instruction | success | 95% CI | goals reached | errors |", "|---|---|---|---|---|---|"]
    if summary["errors"]:
        lines[1:1] = ["", f"**Warning: {summary['errors']} episode(s) failed in the environment, not the policy; "
                          "they are left out of every rate above and below (their causes: episodes.jsonl).**"]
    for r in summary["tasks"]:
        goals = (f" {100 * r['goals_reached']:.0f}% |" if "goals_reached" in r else " - |") if partial else ""
        lines.append(f"| {r['task']} | {r['instruction']} | {r['successes']}/{r['episodes']} ({100 * r['success_rate']:.0f}%) "
                     f"| {100 * r['ci95'][0]:.0f}-{100 * r['ci95'][1]:.0f}% |{goals} {r['errors']} |")
    return "\n".join(lines) + "\n"


def write_reports(out: Path, summary: dict, title: str) -> None:
    """success.json, success.md and success.png (per-task bars with their intervals)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    (out / "success.json").write_text(json.dumps(summary, indent=2))
    (out / "success.md").write_text(markdown(summary, title))
    rows = summary["tasks"]
    fig, ax = plt.subplots(figsize=(max(4, 0.6 * len(rows) + 2), 3.2))
    rates = [100 * r["success_rate"] for r in rows]
    err = [[rates[i] - 100 * r["ci95"][0] for i, r in enumerate(rows)], [100 * r["ci95"][1] - rates[i] for i, r in enumerate(rows)]]
    ax.bar(range(len(rows)), rates, yerr=err, capsize=3, color="#4c72b0")
    ax.set_xticks(range(len(rows)), [str(r["task"]) for r in rows])
    ax.set_ylim(0, 105)
    ax.set_xlabel("task")
    ax.set_ylabel("success (%)")
    ax.set_title(f"{title}: {100 * summary['success_rate']:.1f}% average")
    fig.tight_layout()
    fig.savefig(out / "success.png", dpi=100)
    plt.close(fig)

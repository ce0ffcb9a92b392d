"""The result tables of README.md and docs/evaluation.md, generated from the measurements in
docs/results/ instead of copied by hand: `python -m vla.results` rewrites every block between
`<!-- results:NAME -->` and `<!-- /results:NAME -->` in them; tests/test_results.py fails when a
block differs from what its sources give.

Sources: docs/results/tiny-<suite>/success.json (the protocol evaluation of
checkpoints/tiny-<suite>, written by vla.eval) and docs/results/tiny-<suite>/provenance.json
(the CPU-hours behind the policy and how it was chosen, written when it ships)."""

from __future__ import annotations

import json
import re
from decimal import ROUND_HALF_UP, Decimal
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "docs" / "results"
LIBERO = [("libero_spatial", "Spatial"), ("libero_object", "Object"), ("libero_goal", "Goal"), ("libero_10", "Long")]
# success % per suite (Spatial, Object, Goal, Long) as published: OpenVLA-OFT paper Table I,
# openpi's LIBERO README, the SmolVLA and VLA-Adapter papers
PUBLISHED = [
    ("OpenVLA 7B", (84.7, 88.4, 79.2, 53.7)),
    ("OpenVLA-OFT 7B", (97.6, 98.4, 97.9, 94.5)),
    ("pi0 3B (openpi)", (96.8, 98.8, 95.8, 85.2)),
    ("SmolVLA 0.45B", (90.0, 96.0, 92.0, 71.0)),
    ("VLA-Adapter-Pro 0.5B", (99.6, 99.6, 98.2, 96.4)),
    ("Diffusion Policy (from scratch)", (78.3, 92.5, 68.3, 50.5)),
    ("MDT (from scratch)", (78.5, 87.5, 73.5, 64.8)),
]
# the scripted expert on the protocol's 500 episodes per suite (vla.expert_table, docs/simulation.md)
EXPERT = {"libero_spatial": (500, 500), "libero_object": (500, 500), "libero_goal": (497, 500), "libero_10": (500, 500)}
# RoboCasa: (the name in published tables, our task's index in suite=robocasa); published success % on
# those three with 50 human demonstrations per task (RoboCasa paper via GeoPredict, arXiv 2512.16811,
# Table 1; Isaac-GR00T's RoboCasa README) and the XVR seed's before -> after spatial tuning
ROBOCASA = [("CoffeePressButton (our StartCoffeeMachine)", 1), ("TurnOffMicrowave", 0),
            ("PnPCabToCounter (our PickPlaceCabinetToCounter)", 2)]
ROBOCASA_PUBLISHED = [
    ("BC-Transformer, 50 human demonstrations per task", ("48.0", "70.0", "2.0")),
    ("pi0, 50 human demonstrations per task", ("74.0", "60.0", "6.8")),
    ("GR00T N1.6", ("98.5", "96.0", "41.0")),
    ("XVR seed, Qwen3-VL-2B, before -> after its spatial tuning", ("83.1 -> 89.3", "45.7 -> 72.7", "31.1 -> 38.8")),
]
ROBOCASA_EXPERT = {0: (50, 50), 1: (50, 50), 2: (49, 50)}  # the scripted expert, 50 protocol episodes per task (README)
BLOCK = re.compile(r"(<!-- results:(?P<name>[a-z_]+) -->\n)(?P<body>.*?)(<!-- /results:(?P=name) -->)", re.S)


def one_decimal(x: float) -> str:
    """Rounded half up, as a reader rounds (0.95 -> 1.0; Python's format gives 0.9)."""
    return str(Decimal(repr(round(x, 10))).quantize(Decimal("0.1"), ROUND_HALF_UP))


def ours(suite: str) -> dict | None:
    """The shipped policy's protocol result for a suite, with its provenance; None if not measured."""
    folder = RESULTS / f"tiny-{suite}"
    if not (folder / "success.json").is_file():
        return None
    result = json.loads((folder / "success.json").read_text())
    prov = folder / "provenance.json"
    return {**result, "provenance": json.loads(prov.read_text()) if prov.is_file() else {}}


def libero_table() -> str:
    measured = {s: ours(s) for s, _ in LIBERO}
    head = "| policy | " + " | ".join(name for _, name in LIBERO) + " | average |\n|---|" + "---:|" * (len(LIBERO) + 1) + "\n"

    def pct(x: float) -> str:
        return f"{100 * x:.1f}"

    cells = []
    for s, _ in LIBERO:
        r = measured[s]
        cells.append("not yet" if r is None else
                     f"**{pct(r['success_rate'])}** ({pct(r['ci95'][0])}-{pct(r['ci95'][1])})")
    done = [r for r in measured.values() if r is not None]
    average = f"**{100 * sum(r['success_rate'] for r in done) / len(done):.1f}**" if len(done) == len(LIBERO) else \
        f"({len(done)} of {len(LIBERO)} suites)"
    rows = ["| **ours**: tiny Qwen2.5-VL + OFT head, trained on this CPU (95% Wilson CI) | " + " | ".join(cells) + f" | {average} |"]
    hours = [measured[s]["provenance"].get("cpu_hours") if measured[s] else None for s, _ in LIBERO]
    rows.append("| CPU-hours behind each (collection + training, 2 cores) | "
                + " | ".join("" if h is None else f"{one_decimal(h['collection'] + h['training'])} "
                             f"({one_decimal(h['collection'])} + {one_decimal(h['training'])})" for h in hours) + " | |")
    expert = [EXPERT[s] for s, _ in LIBERO]
    rows.append("| scripted expert (ground truth, no learning) | " + " | ".join(f"{100 * k / n:.1f}" for k, n in expert)
                + f" | {100 * sum(k / n for k, n in expert) / len(expert):.1f} |")
    for name, values in PUBLISHED:  # averaged as the papers do: half up from the rounded columns
        rows.append(f"| {name} | " + " | ".join(f"{v:.1f}" for v in values) + f" | {one_decimal(sum(values) / len(values))} |")
    return head + "\n".join(rows) + "\n"


def libero_policies() -> str:
    """One line per shipped LIBERO policy: its protocol result per task, its held-out fresh layouts
    (docs/results/tiny-<suite>-heldout_layouts/, where measured) and how it was made and chosen."""
    lines = []
    for suite, name in LIBERO:
        r = ours(suite)
        if r is None:
            lines.append(f"- **{name}**: not yet.")
            continue
        p = r["provenance"]
        per_task = ", ".join(str(t["successes"]) for t in r["tasks"])
        line = (f"- **{name}**, `checkpoints/tiny-{suite}`: {count(r)} over the protocol; per task {per_task} "
                f"of {r['tasks'][0]['episodes']} (`docs/results/tiny-{suite}/`)")
        heldout = RESULTS / f"tiny-{suite}-heldout_layouts" / "success.json"
        if heldout.is_file():
            line += f"; {count(json.loads(heldout.read_text()))} on held-out fresh layouts (`docs/results/tiny-{suite}-heldout_layouts/`)"
        if p.get("how"):
            line += f". Made by {p['how']}"
        if p.get("chosen_on"):
            line += f"; chosen on {p['chosen_on']}"
        lines.append(line + ".")
    return "\n".join(lines) + "\n"


def robocasa_table() -> str:
    """Per task on the stand-in kitchens: the shipped policy (docs/results/tiny-robocasa/), the
    scripted expert, a random policy (docs/results/robocasa-random/), then the published rows."""
    from eval_rollouts.results import wilson

    def cell(k: int, n: int) -> str:
        lo, hi = wilson(k, n)
        return f"{k}/{n} ({100 * k / n:.0f}%, CI {100 * lo:.0f}-{100 * hi:.0f})"

    def row(name: str, result: dict | None) -> str:
        tasks = {t["task"]: t for t in result["tasks"]} if result else {}
        return f"| {name} | " + " | ".join(cell(tasks[i]["successes"], tasks[i]["episodes"]) if i in tasks else "not yet"
                                           for _, i in ROBOCASA) + " |"

    head = "| policy (stand-in kitchens unless named) | " + " | ".join(name for name, _ in ROBOCASA) + " |\n|---|" \
        + "---|" * len(ROBOCASA) + "\n"
    learned = ours("robocasa")
    hours = (learned or {}).get("provenance", {}).get("cpu_hours")
    rows = [row("**ours**, trained on this CPU" + (f" ({one_decimal(sum(hours.values()))} CPU-hours)" if hours else ""), learned),
            "| scripted expert | " + " | ".join(cell(*ROBOCASA_EXPERT[i]) for _, i in ROBOCASA) + " |"]
    random = RESULTS / "robocasa-random" / "success.json"
    rows.append(row("random actions", json.loads(random.read_text()) if random.is_file() else None))
    rows += [f"| {name} (real kitchens) | " + " | ".join(values) + " |" for name, values in ROBOCASA_PUBLISHED]
    return head + "\n".join(rows) + "\n"


def count(result: dict) -> str:
    """'432/500 (86.4%, CI 83.1-89.1)' for a success.json."""
    lo, hi = (100 * x for x in result["ci95"])
    return f"{result['successes']}/{result['episodes']} ({100 * result['success_rate']:.1f}%, CI {lo:.1f}-{hi:.1f})"


def latency_table() -> str:
    """bench/latency.py's table (docs/results/latency/latency.md), as it wrote it."""
    table = RESULTS / "latency" / "latency.md"
    return table.read_text() if table.is_file() else "not yet measured\n"


TABLES = {"libero": libero_table, "libero_policies": libero_policies, "robocasa": robocasa_table, "latency": latency_table}
# the files whose results blocks are generated (and checked by tests/test_results.py)
DOCUMENTS = [ROOT / "README.md", ROOT / "docs" / "evaluation.md", ROOT / "docs" / "deployment.md"]


def whats_next(checkpoint: Path) -> str:
    """What the quickstart prints last: its own result, what the shipped policies and the full
    recipe give, and the commands for them."""
    lines = [f"\nCheckpoint: {checkpoint}"]
    result = checkpoint.parent.parent / "eval" / checkpoint.name / "success.json"
    if result.is_file():
        own = json.loads(result.read_text())
        lines.append(f"This run solved {own['successes']}/{own['episodes']} episodes ({100 * own['success_rate']:.0f}%) "
                     f"of the tasks it trained on, from init states it never saw.")
    lines += ["", "Next:"]
    for suite, _ in LIBERO:
        r = ours(suite)
        if r:
            hours = r["provenance"].get("cpu_hours", {})
            lines.append(f"  shipped {suite} policy: {100 * r['success_rate']:.1f}% over the protocol's {r['episodes']} episodes"
                         + (f" ({sum(hours.values()):.1f} CPU-hours to make)" if hours else "")
                         + f"\n      python -m vla.eval eval.checkpoint=checkpoints/tiny-{suite} suite={suite}")
    lines += ["  the CPU recipe on a whole suite (~25-40 min of collection, ~30 min of training, then its evaluations;",
              "  docs/training.md, 'Training on a CPU'):",
              "      python -m vla.collect suite=libero_object episodes_per_task=50 workers=2 out=data/libero_object_50",
              "      python -m vla.train recipe=cpu suite=libero_object",
              "  a policy in Python: import vla; policy = vla.load_policy('tiny-libero_spatial'); policy.act(obs)"]
    return "\n".join(lines)


def render(text: str) -> str:
    """text with every results block replaced by its generated table."""
    def block(m: re.Match) -> str:
        name = m.group("name")
        if name not in TABLES:
            raise KeyError(f"README block results:{name} has no generator (known: {sorted(TABLES)})")
        return m.group(1) + TABLES[name]() + m.group(4)
    return BLOCK.sub(block, text)


def main(argv: list[str]) -> None:
    for doc in DOCUMENTS:
        text = doc.read_text()
        new = render(text)
        if "--check" in argv:
            if new != text:
                raise SystemExit(f"{doc.relative_to(ROOT)}'s result tables differ from docs/results/: run python -m vla.results")
            continue
        doc.write_text(new)
        print(f"{doc.relative_to(ROOT)}: {len(BLOCK.findall(text))} result block(s) written from {RESULTS}")


if __name__ == "__main__":
    main(sys.argv[1:])

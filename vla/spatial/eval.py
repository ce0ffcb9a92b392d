"""The spatial benchmark: accuracy per question type on the held-out split (multiple choice by
answer likelihood, numbers by greedy generation scored with SPAR's mean relative accuracy), with
chance levels alongside (1/#choices; for numbers, always answering the training split's median).

python -m vla.spatial.eval checkpoint=outputs/spatial_tune/.../checkpoints/step_000300
python -m vla.spatial.eval checkpoint=null       # the untuned backbone
"""

from __future__ import annotations

import json
from pathlib import Path

import hydra
import numpy as np
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from .questions import NUMERIC, TASK_TYPES, score


def spread(records: list, n: int | None) -> list:
    """n records evenly spread over the list (every task and shard represented), all if n is None."""
    if n is None or n >= len(records):
        return list(records)
    return [records[i] for i in np.linspace(0, len(records) - 1, n).round().astype(int)]


def numeric_chance(task_type: str, train_records: list[dict]) -> dict[str, str]:
    """The constant answer a blind guesser would give: the training split's median."""
    from .questions import parse_numbers

    values = [parse_numbers(r["answer"]) for r in train_records if r["task_type"] == task_type]
    if not values:
        return {}
    med = np.median(np.array(values), axis=0)
    return {"answer": ", ".join(f"{x:.2f}" for x in np.atleast_1d(med))}


def benchmark(model, samples, train_records: list[dict], batch_size: int = 8) -> list[dict]:
    """Score every sample; one row per question."""
    import torch

    medians = {t: numeric_chance(t, train_records) for t in NUMERIC}
    rows = []
    with torch.no_grad():
        for i in tqdm(range(0, len(samples), batch_size), desc="spatial eval", unit="batch", leave=False):
            batch = [samples[j] for j in range(i, min(i + batch_size, len(samples)))]
            choice = [s for s in batch if s["task_type"] not in NUMERIC]
            numeric = [s for s in batch if s["task_type"] in NUMERIC]
            preds = dict(zip([s["id"] for s in choice], model.choose(choice) if choice else []))
            preds.update(zip([s["id"] for s in numeric], model.generate(numeric) if numeric else []))
            for s in batch:
                t = s["task_type"]
                if t in NUMERIC:
                    guess = medians[t].get("answer")
                    chance = score(t, guess, s["answer"]) if guess else float("nan")
                else:
                    chance = 1.0 / len(s["choices"])
                rows.append({"id": s["id"], "task_type": t, "prediction": preds[s["id"]], "answer": s["answer"],
                             "score": score(t, preds[s["id"]], s["answer"]), "chance": chance})
    return rows


def summarize(rows: list[dict]) -> dict:
    by_type = {}
    for t in TASK_TYPES:
        rs = [r for r in rows if r["task_type"] == t]
        if rs:
            by_type[t] = {"n": len(rs), "metric": "MRA" if t in NUMERIC else "accuracy",
                          "score": float(np.mean([r["score"] for r in rs])),
                          "chance": float(np.nanmean([r["chance"] for r in rs]))}
    def mean_of(numeric: bool, key: str) -> float:
        vals = [v[key] for t, v in by_type.items() if (t in NUMERIC) == numeric]
        return float(np.mean(vals)) if vals else float("nan")
    overall = {"choice_accuracy": mean_of(False, "score"), "choice_chance": mean_of(False, "chance"),
               "numeric_mra": mean_of(True, "score"), "numeric_chance": mean_of(True, "chance"), "n": len(rows)}
    return {"by_type": by_type, "overall": overall}


def markdown(summary: dict, title: str) -> str:
    lines = [f"### {title}", "", "| question type | n | metric | score | chance |", "|---|---:|---|---:|---:|"]
    for t, v in summary["by_type"].items():
        lines.append(f"| {t} | {v['n']} | {v['metric']} | {v['score']:.3f} | {v['chance']:.3f} |")
    o = summary["overall"]
    lines.append(f"| **multiple choice (mean over types)** | | accuracy | **{o['choice_accuracy']:.3f}** | {o['choice_chance']:.3f} |")
    lines.append(f"| **numeric (mean over types)** | | MRA | **{o['numeric_mra']:.3f}** | {o['numeric_chance']:.3f} |")
    return "\n".join(lines) + "\n"


def evaluate(cfg: DictConfig) -> dict:
    import torch

    from .generate import read_records
    from .stage import SpatialSamples, build_vqa_model

    torch.set_num_threads(int(cfg.num_threads))
    model_cfg = OmegaConf.to_container(cfg.model, resolve=True)
    if cfg.checkpoint:
        if not (Path(cfg.checkpoint) / "config.json").is_file():
            raise ValueError(f"checkpoint={cfg.checkpoint}: not a spatial-stage checkpoint (no config.json there)")
        model_cfg["pretrained"] = str(cfg.checkpoint)
    name = Path(cfg.checkpoint).name if cfg.checkpoint else "untuned"
    out = Path(cfg.out or f"outputs/spatial_eval/{cfg.suite.name}-{name}")
    records = spread(read_records(cfg.dataset, cfg.split), cfg.max_questions)
    train_records = read_records(cfg.dataset, "train")
    model = build_vqa_model(model_cfg, cfg.seed).eval()
    rows = benchmark(model, SpatialSamples(cfg.dataset, records), train_records, cfg.batch_size)
    summary = summarize(rows)
    out.mkdir(parents=True, exist_ok=True)
    (out / "answers.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (out / "summary.json").write_text(json.dumps({"checkpoint": cfg.checkpoint, **summary}, indent=2))
    md = markdown(summary, f"Spatial benchmark, {cfg.split} split of {cfg.dataset}: {name}")
    (out / "summary.md").write_text(md)
    print(md)
    print(f"results: {out}")
    return summary


@hydra.main(config_path="../../configs", config_name="spatial_eval", version_base="1.3")
def main(cfg: DictConfig) -> None:
    try:
        evaluate(cfg)
    except (FileNotFoundError, ValueError) as e:
        raise SystemExit(f"vla.spatial.eval: {e}") from None


if __name__ == "__main__":
    main()

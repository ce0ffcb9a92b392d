"""The spatial benchmark: accuracy per question type on the held-out split (multiple choice by
answer likelihood, numbers by greedy generation scored with SPAR's mean relative accuracy), with
two baselines alongside: chance (1/#choices) and a blind prior that never looks at the images
(always the training split's most frequent answer; for numbers, its median).

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

from .questions import ABSOLUTE, NUMERIC, POINTING, TASK_TYPES, score


def spread(records: list, n: int | None) -> list:
    """n records evenly spread over the list (every task and shard represented), all if n is None."""
    if n is None or n >= len(records):
        return list(records)
    return [records[i] for i in np.linspace(0, len(records) - 1, n).round().astype(int)]


def blind_answers(train_records: list[dict]) -> dict[str, str]:
    """Per question type, the answer a guesser who never looks gives: the training split's most
    frequent answer (multiple choice) or its median (numbers, per component)."""
    from collections import Counter

    from .questions import parse_numbers

    out = {}
    for t in TASK_TYPES:
        answers = [r["answer"] for r in train_records if r["task_type"] == t]
        if not answers:
            continue
        if kind_of(t) != "choice":
            med = np.median(np.array([parse_numbers(a) for a in answers]), axis=0)
            out[t] = ", ".join(f"{x:.2f}" for x in np.atleast_1d(med))
        else:
            out[t] = Counter(answers).most_common(1)[0][0]
    return out


def benchmark(model, samples, train_records: list[dict], batch_size: int = 8) -> list[dict]:
    """Score every sample; one row per question."""
    import torch

    blind = blind_answers(train_records)
    rows = []
    with torch.no_grad():
        for i in tqdm(range(0, len(samples), batch_size), desc="spatial eval", unit="batch", leave=False):
            batch = [samples[j] for j in range(i, min(i + batch_size, len(samples)))]
            choice = [s for s in batch if kind_of(s["task_type"]) == "choice"]
            numeric = [s for s in batch if kind_of(s["task_type"]) != "choice"]
            preds = dict(zip([s["id"] for s in choice], model.choose(choice) if choice else []))
            preds.update(zip([s["id"] for s in numeric], model.generate(numeric) if numeric else []))
            for s in batch:
                t = s["task_type"]
                mask = s.get("mask")
                # chance of a point: a uniformly random one lands in the mask as often as the mask covers the image
                chance = None if t in NUMERIC else float(mask.mean()) if t in POINTING else 1.0 / len(s["choices"])
                rows.append({"id": s["id"], "task_type": t, "prediction": preds[s["id"]], "answer": s["answer"],
                             "score": score(t, preds[s["id"]], s["answer"], mask), "chance": chance,
                             "blind": score(t, blind[t], s["answer"], mask) if t in blind else None})
    return rows


def kind_of(task_type: str) -> str:
    """How a question type is answered and scored: "numeric" / "pointing" (generated), "choice"."""
    return "numeric" if task_type in NUMERIC else "pointing" if task_type in POINTING else "choice"


def _mean(values: list) -> float | None:
    """Mean of the values that exist (None: no baseline of that kind); JSON-safe."""
    vals = [v for v in values if v is not None]
    return float(np.mean(vals)) if vals else None


def summarize(rows: list[dict]) -> dict:
    by_type = {}
    for t in TASK_TYPES:
        rs = [r for r in rows if r["task_type"] == t]
        if rs:
            by_type[t] = {"n": len(rs), "metric": "within 1-10 cm" if t in ABSOLUTE else "MRA" if t in NUMERIC else
                          "in mask" if t in POINTING else "accuracy",
                          "score": float(np.mean([r["score"] for r in rs])),
                          "chance": _mean([r["chance"] for r in rs]), "blind": _mean([r["blind"] for r in rs])}
    def mean_of(kind: str, key: str) -> float | None:
        return _mean([v[key] for t, v in by_type.items() if kind_of(t) == kind])
    overall = {"choice_accuracy": mean_of("choice", "score"), "choice_chance": mean_of("choice", "chance"),
               "choice_blind": mean_of("choice", "blind"), "numeric_mra": mean_of("numeric", "score"),
               "numeric_blind": mean_of("numeric", "blind"), "pointing_accuracy": mean_of("pointing", "score"),
               "pointing_chance": mean_of("pointing", "chance"), "pointing_blind": mean_of("pointing", "blind"),
               "n": len(rows)}
    return {"by_type": by_type, "overall": overall}


def markdown(summary: dict, title: str) -> str:
    def f(x: float | None) -> str:
        return "-" if x is None else f"{x:.3f}"

    lines = [f"### {title}", "", "| question type | n | metric | score | chance | blind prior |",
             "|---|---:|---|---:|---:|---:|"]
    for t, v in summary["by_type"].items():
        lines.append(f"| {t} | {v['n']} | {v['metric']} | {v['score']:.3f} | {f(v['chance'])} | {f(v['blind'])} |")
    o = summary["overall"]
    means = (("multiple choice", "accuracy", "choice_accuracy", "choice"), ("numeric", "MRA or cm", "numeric_mra", "numeric"),
             ("pointing", "in mask", "pointing_accuracy", "pointing"))
    for name, metric, key, kind in means:
        if o[key] is not None:
            lines.append(f"| **{name} (mean over types)** | | {metric} | **{o[key]:.3f}** | "
                         f"{f(o.get(kind + '_chance'))} | {f(o[kind + '_blind'])} |")
    return "\n".join(lines) + "\n"


def evaluate(cfg: DictConfig) -> dict:
    import torch

    from .generate import read_records
    from .model import SpatialSamples, build_vqa_model

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
    model = build_vqa_model(model_cfg, cfg.seed, train_records).eval()
    size = cfg.resolution
    if cfg.checkpoint and (Path(cfg.checkpoint) / "config.yaml").is_file():  # the image size it was tuned at
        size = OmegaConf.load(Path(cfg.checkpoint) / "config.yaml").train.resolution
    rows = benchmark(model, SpatialSamples(cfg.dataset, records, size), train_records, cfg.batch_size)
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

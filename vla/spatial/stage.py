"""stage=spatial of `python -m vla.train`: tune the backbone on the spatial VQA training split."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from .generate import read_records
from .model import SpatialSamples, build_vqa_model


def spatial_stage(cfg: DictConfig, config_yaml: str, out: Path | None = None):
    import torch

    from policies.checkpoint import write_folder_atomic, write_trainer_state

    from ..training.loop import Stage, TrainError
    from .eval import benchmark, spread, summarize

    if cfg.train.lora:
        raise TrainError("stage=spatial tunes the whole backbone; train.lora is not supported there")
    try:
        train_records = read_records(cfg.train.dataset, "train")
        test_records = read_records(cfg.train.dataset, "test")
    except FileNotFoundError as e:
        raise TrainError(str(e)) from None
    if not train_records:
        raise TrainError(f"{cfg.train.dataset} has no training-split questions")
    torch.manual_seed(cfg.seed)
    model = build_vqa_model(OmegaConf.to_container(cfg.model, resolve=True), cfg.seed, train_records)
    if cfg.train.freeze_embeddings:  # as in the action stage: AdamW would walk all 151k rows
        model.lm.get_input_embeddings().weight.requires_grad_(False)

    def save(path: Path, state: dict, tensors: dict, weights: None) -> None:  # not shardable: weights are never gathered
        def write(tmp: Path) -> None:
            model.save(tmp)
            (tmp / "config.yaml").write_text(config_yaml)
            write_trainer_state(tmp, state, tensors)

        write_folder_atomic(path, write)

    def evaluate(path: Path) -> dict:
        model.eval()
        try:
            rows = benchmark(model, SpatialSamples(cfg.train.dataset, spread(test_records, n_eval), cfg.train.resolution), train_records)
        finally:
            model.train()
        overall = summarize(rows)["overall"]
        keys = ("choice_accuracy", "numeric_mra", "pointing_accuracy")
        return {f"spatial/{k}": overall[k] for k in keys if overall[k] is not None}

    n_eval = int(cfg.train.get("eval_questions", 0) or 0)
    return Stage(model, SpatialSamples(cfg.train.dataset, train_records, cfg.train.resolution), lambda samples: model.encode(samples),
                 save=save, load=model.load_weights,
                 summary=f"spatial VQA {cfg.train.dataset}: {len(train_records)} training questions",
                 accuracy_name="answer_token_accuracy", evaluate=evaluate if n_eval and test_records else None)

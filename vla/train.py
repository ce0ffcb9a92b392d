"""Train a VLA policy on a LeRobotDataset: `python -m vla.train recipe=cpu suite=libero_object`.

With no arguments it is the quickstart (configs/recipe/quickstart.yaml through configs/train_job.yaml):
two LIBERO-Spatial tasks collected, trained and evaluated in minutes. `recipe=cpu` is the measured
CPU recipe for whole suites; `~recipe` the plain defaults. `stage=spatial` tunes the backbone on
spatial VQA first (vla.spatial); `backbone_checkpoint=PATH` starts the action stage from its checkpoint.
Multi-GPU: `accelerate launch --config_file configs/accelerate/{1gpu,ddp_8gpu,fsdp_8gpu}.yaml -m vla.train ...`
(the same code); `python -m vla.plan_memory` says what fits.
Rerunning the same command resumes from the newest checkpoint in `train.output_dir`.
The loop lives in vla.training.loop, the action stage in vla.training.action.
"""

from __future__ import annotations

from pathlib import Path

import hydra
from omegaconf import DictConfig

from .training.loop import TrainError, train_stage


def train(cfg: DictConfig) -> Path:
    """Train cfg.stage (action | spatial); returns the last checkpoint folder."""
    if cfg.stage == "spatial":
        from .spatial.stage import spatial_stage as make_stage
    elif cfg.stage == "action":
        from .training.action import action_stage as make_stage
    else:
        raise TrainError(f"stage must be 'action' or 'spatial', not {cfg.stage!r}")
    return train_stage(cfg, make_stage)


@hydra.main(config_path="../configs", config_name="train_job", version_base="1.3")
def main(cfg: DictConfig) -> None:
    from policies.checkpoint import CheckpointError

    from .dataset.format import DatasetError

    try:
        last = train(cfg)
    except (TrainError, DatasetError, CheckpointError, ValueError) as e:
        raise SystemExit(f"vla.train: {e}") from None
    if cfg.train.get("summary") == "quickstart":
        from .results import whats_next

        print(whats_next(last))


if __name__ == "__main__":
    main()

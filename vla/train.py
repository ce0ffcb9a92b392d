"""Train a VLA policy on a LeRobotDataset: `python -m vla.train suite=libero_spatial model=tiny_qwen2_5_vl head=tokens`.

`stage=spatial` tunes the backbone on spatial VQA first (vla.spatial); `backbone_checkpoint=PATH`
starts the action stage from its checkpoint. `recipe=cpu` is the measured CPU recipe.
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


@hydra.main(config_path="../configs", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> None:
    from policies.checkpoint import CheckpointError

    from .dataset.format import DatasetError

    try:
        train(cfg)
    except (TrainError, DatasetError, CheckpointError, ValueError) as e:
        raise SystemExit(f"vla.train: {e}") from None


if __name__ == "__main__":
    main()

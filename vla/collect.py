"""Collect scripted-expert demonstrations into a LeRobotDataset v3.0 folder (vla.dataset.collection).

python -m vla.collect suite=libero_spatial episodes_per_task=2 cameras=[agentview,robot0_eye_in_hand] resolution=128
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig, OmegaConf

from .dataset.collection import collect


@hydra.main(config_path="../configs", config_name="collect", version_base="1.3")
def main(cfg: DictConfig) -> None:
    print(OmegaConf.to_yaml(cfg, resolve=True))
    try:
        collect(cfg)
    except ValueError as e:  # bad suite, task, camera, resolution or dataset folder: say which
        raise SystemExit(f"vla.collect: {e}") from None


if __name__ == "__main__":
    main()

"""A simulated arm on ROS 1, backed by our LIBERO env: `python -m vla.sim_arm suite=libero_spatial task=0 init=0`
(vla.deploy.sim_arm)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import hydra
from omegaconf import DictConfig

from .deploy.sim_arm import SimArm


@hydra.main(config_path="../configs", config_name="sim_arm", version_base="1.3")
def main(cfg: DictConfig) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    arm = SimArm(cfg)
    try:
        status = arm.run()
    finally:
        arm.env.close()
    if cfg.result:
        Path(cfg.result).write_text(json.dumps(status))


if __name__ == "__main__":
    main()

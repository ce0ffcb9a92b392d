"""Training entry point: `python -m vla.train suite=libero_spatial model=tiny_qwen2_5_vl`.

Training itself lands with the VLA issue; today the command resolves and prints the config
(`--cfg job` prints it through hydra without running anything).
"""

import hydra
from omegaconf import DictConfig, OmegaConf


@hydra.main(config_path="../configs", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> None:
    print(OmegaConf.to_yaml(cfg, resolve=True))


if __name__ == "__main__":
    main()

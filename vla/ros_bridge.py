"""Drive an arm from the policy server over ROS: `python -m vla.ros_bridge server=ws://gpu-box:8000 config=robot.yaml`
(vla.deploy.ros_io: topics, transports; vla.deploy.bridge: safety limits, watchdog)."""

from __future__ import annotations

import logging
import signal

import hydra
from omegaconf import DictConfig, OmegaConf

from .deploy.client import ServerError
from .deploy.ros_io import run


@hydra.main(config_path="../configs", config_name="ros_bridge", version_base="1.3")
def main(cfg: DictConfig) -> None:
    from hydra.core.hydra_config import HydraConfig

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # rospy's handlers are off: finish cleanly
    if cfg.config:  # a robot's YAML file, then the command line on top of it
        try:
            robot = OmegaConf.load(cfg.config)
        except OSError as e:
            raise SystemExit(f"vla.ros_bridge: cannot read config={cfg.config} ({e.strerror or e})") from None
        overrides = [o.lstrip("+") for o in HydraConfig.get().overrides.task if not o.startswith("~")]
        cfg = OmegaConf.merge(cfg, robot, OmegaConf.from_dotlist(overrides))
    try:
        run(cfg)
    except (ValueError, ConnectionError, ServerError) as e:
        raise SystemExit(f"vla.ros_bridge: {e}") from None
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()

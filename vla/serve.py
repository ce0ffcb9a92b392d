"""Serve a policy over websockets: `python -m vla.serve checkpoint=PATH port=8000` (vla.deploy.server)."""

from __future__ import annotations

import asyncio
import logging

import hydra
from omegaconf import DictConfig

from .deploy.server import build_server

log = logging.getLogger("vla.serve")


@hydra.main(config_path="../configs", config_name="serve", version_base="1.3")
def main(cfg: DictConfig) -> None:
    from policies.checkpoint import CheckpointError

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        server = build_server(cfg)
    except (ValueError, CheckpointError) as e:
        raise SystemExit(f"vla.serve: {e}") from None
    if cfg.host not in ("127.0.0.1", "localhost") and not cfg.api_key:
        log.warning("serving on %s without an API key: anyone who reaches this port can drive the policy", cfg.host)
    try:
        asyncio.run(server.serve(cfg.host, int(cfg.port)))
    except OSError as e:
        raise SystemExit(f"vla.serve: cannot listen on {cfg.host}:{cfg.port} ({e.strerror or e})") from None
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()

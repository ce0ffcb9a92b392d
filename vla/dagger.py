"""DAgger rounds relabelled by the scripted expert: `python -m vla.dagger checkpoint=PATH rounds=N`.

Each round rolls out the current policy on fresh layouts, labels every visited state with the
expert's action, adds the rollouts to the training data and continues training; results in
`out`/rounds.md (validation success per round) and TensorBoard (`out`/tb). Rerunning resumes.
The rounds live in vla.training.dagger.
"""

from __future__ import annotations

from pathlib import Path

import hydra
from omegaconf import DictConfig


@hydra.main(config_path="../configs", config_name="dagger", version_base="1.3")
def main(cfg: DictConfig) -> None:
    from policies.checkpoint import CheckpointError

    from .dataset.format import DatasetError
    from .training.dagger import run_dagger
    from .training.loop import TrainError

    try:
        run_dagger(cfg)
    except (TrainError, DatasetError, CheckpointError, ValueError) as e:
        raise SystemExit(f"vla.dagger: {e}") from None
    print((Path(cfg.out) / "rounds.md").read_text())


if __name__ == "__main__":
    main()

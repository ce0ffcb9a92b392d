from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def load_config(*overrides):
    """The hydra config the CLI would build from these overrides."""
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides))


def real_model_cfg(name: str, depth: int | None = None) -> dict:
    """The model group as `model=<name> model.pretrained=null [model.depth=N]` composes it: the
    published architecture (configs/model/arch/), no hub, no weights."""
    from omegaconf import OmegaConf

    depth_override = [f"model.depth={depth}"] if depth is not None else []
    return OmegaConf.to_container(load_config(f"model={name}", "model.pretrained=null", *depth_override).model)


@pytest.fixture(scope="session")
def demo_dataset(tmp_path_factory) -> Path:
    """Two scripted-expert episodes of libero_spatial task 0 (real simulator, 64x64 images) as a
    LeRobot v3 dataset: the training data of the policy tests."""
    from envs.episodes import make_expert, record_episode
    from envs.libero_env import LiberoEnv
    from vla.dataset.collection import dataset_features
    from vla.dataset.format import LeRobotWriter

    root = tmp_path_factory.mktemp("demo") / "libero_spatial"
    env = LiberoEnv("libero_spatial", 0, resolution=64)
    writer = LeRobotWriter(root, fps=20, features=dataset_features(list(env.cameras), 64),
                           recording={"render_quality": env.render_quality})
    seed = 0
    while writer.num_episodes < 2:
        success, frames = record_episode(env, make_expert(env), seed=seed, init_state_index=None)
        if success:
            writer.add_episode(frames, env.instruction)
        seed += 1
        assert seed < 6, "the expert failed too often to build the demo dataset"
    env.close()
    return root

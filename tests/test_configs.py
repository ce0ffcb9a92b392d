import subprocess
import sys

import pytest
from conftest import load_config as load
from hydra.errors import ConfigCompositionException

MAX_STEPS = {"libero_spatial": 220, "libero_object": 280, "libero_goal": 300, "libero_10": 520, "libero_90": 400}


@pytest.mark.parametrize("suite, steps", MAX_STEPS.items())
def test_suites_follow_the_openvla_protocol(suite, steps):
    cfg = load(f"suite={suite}")
    assert cfg.suite.name == suite and cfg.suite.max_steps == steps
    assert cfg.suite.num_wait_steps == 10 and cfg.suite.init_states_per_task == 50
    assert list(cfg.suite.cameras) == ["agentview", "robot0_eye_in_hand"]


def test_unknown_group_value_fails_clearly():
    with pytest.raises(ConfigCompositionException, match="libero_nope"):
        load("suite=libero_nope")


def test_train_cli_is_the_quickstart_unless_another_recipe_is_named():
    """`python -m vla.train` alone is the first run (configs/recipe/quickstart.yaml): two tasks,
    the fast path, its own evaluation on those tasks; recipe=cpu is the full recipe, ~recipe the
    plain defaults. Shown through the CLI's own --cfg job, as a user would see it."""
    import yaml

    def job(*overrides):
        out = subprocess.run([sys.executable, "-m", "vla.train", *overrides, "--cfg", "job", "--resolve"],
                             capture_output=True, text=True, check=True).stdout
        return yaml.safe_load(out)

    quick = job("suite=libero_goal")
    assert quick["suite"]["name"] == "libero_goal" and quick["train"]["tasks"] == [0, 1]
    assert quick["train"]["dataset"] == "data/libero_goal_quickstart" and quick["train"]["summary"] == "quickstart"
    assert (quick["head"]["name"], quick["head"]["queries"], quick["train"]["prompt"], quick["train"]["resolution"]) == (
        "parallel", "steps", "compact", 84)
    full = job("recipe=cpu")
    assert full["train"]["tasks"] is None and full["train"]["dataset"] == "data/libero_spatial_50" and "summary" not in full["train"]
    plain = job("~recipe")
    assert plain["head"]["name"] == "tokens" and plain["train"]["max_steps"] == 300


def test_train_cli_rejects_unknown_suite():
    res = subprocess.run([sys.executable, "-m", "vla.train", "suite=libero_nope", "--cfg", "job"],
                         capture_output=True, text=True)
    assert res.returncode != 0
    assert "Could not find 'suite/libero_nope'" in res.stderr
    assert "Traceback" not in res.stderr


# each entry point's config and one value its own file (or group) sets: the CLI composed the right one
ENTRY_POINTS = {"vla.train": ("train.summary", "quickstart"), "vla.eval": ("eval.trials_per_task", 50),
                "vla.collect": ("render_quality", "lowpoly"), "vla.serve": ("obs_map", None),
                "vla.ros_bridge": ("safety.max_obs_age_s", 0.2), "vla.sim_arm": ("suite.name", "libero_spatial"),
                "vla.expert_table": ("out", "outputs/expert"), "vla.spatial.generate": ("suite.name", "libero_spatial"),
                "vla.spatial.eval": ("dataset", "data/spatial/libero_spatial"), "vla.dagger": ("steps_per_round", 1000)}


@pytest.mark.parametrize("module, expected", ENTRY_POINTS.items())
def test_every_entry_point_composes_its_config(module, expected):
    import yaml

    res = subprocess.run([sys.executable, "-m", module, "--cfg", "job", "--resolve"], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-2000:]
    node, (path, value) = yaml.safe_load(res.stdout), expected
    for key in path.split("."):
        assert isinstance(node, dict) and key in node, f"{module}: no {path} in its config"
        node = node[key]
    assert value is None or node == value, f"{module}: {path} = {node!r}, expected {value!r}"


def test_expert_table_runs_the_expert_through_hydra(tmp_path):
    res = subprocess.run([sys.executable, "-m", "vla.expert_table", "tasks=[0]", "trials_per_task=1", "workers=1",
                          f"out={tmp_path}"], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "| all | | 1/1 (100.0%) |" in (tmp_path / "libero_spatial.md").read_text()
    bad = subprocess.run([sys.executable, "-m", "vla.expert_table", "tasks=[12]", f"out={tmp_path}"],
                         capture_output=True, text=True)
    assert bad.returncode != 0 and "tasks [12] out of range" in bad.stderr and "Traceback" not in bad.stderr

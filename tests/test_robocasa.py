"""RoboCasa's interpreter (`.venv-robocasa`, made by install.sh): robosuite 1.5 for RoboCasa cannot
share a venv with LIBERO's robosuite 1.4, so RoboCasa's env workers will run under a second
interpreter. Its `robosuite` module must be praxis-robosuite's: PyPI's robosuite 1.5.2 (which
rlinf-robocasa365 asks for) fails inside the kitchen with `load_model_on_init`."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from envs.robocasa_env import TASKS  # importable here: robocasa itself is imported only when an env is made
from envs.suites import ROBOCASA_SUITES, get_suite
from vla.dataset.reader import LeRobotDataset

REPO = Path(__file__).resolve().parents[1]
ROBOCASA_PYTHON = REPO / ".venv-robocasa" / "bin" / "python"


@pytest.fixture(scope="module")
def standins(tmp_path_factory) -> Path:
    """A stand-in asset tree (envs.robocasa_standins), written once for the module's tests."""
    root = tmp_path_factory.mktemp("robocasa") / "assets"
    r = subprocess.run([str(ROBOCASA_PYTHON), "-m", "envs.robocasa_standins", str(root)], capture_output=True,
                       text=True, timeout=300, cwd=REPO)
    assert r.returncode == 0, r.stderr[-3000:]
    return root

BUILD = """
import sys, robosuite, robocasa
from robocasa.utils.dataset_registry_utils import get_task_horizon
print("robosuite", robosuite.__version__)
for name in sys.argv[1:]:
    env = robosuite.make(name, robots="PandaOmron", has_renderer=False, has_offscreen_renderer=False,
                         use_camera_obs=False)
    print("built", name, type(env).__name__, get_task_horizon(name))
"""


def test_robocasa_interpreter_builds_the_three_kitchen_tasks(tmp_path):
    assert ROBOCASA_PYTHON.exists(), f"{ROBOCASA_PYTHON} is missing: run ./install.sh"
    r = subprocess.run([str(ROBOCASA_PYTHON), "-c", BUILD, *TASKS], capture_output=True, text=True,
                       timeout=300, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    lines = r.stdout.splitlines()
    assert "robosuite 1.5.2" in lines
    for name, _, horizon in ROBOCASA_SUITES["robocasa"]:  # our registry's horizons (no robocasa import) are RoboCasa's
        assert f"built {name} {name} {horizon}" in lines, r.stdout


EPISODE = """
import sys
import numpy as np
import robosuite, robocasa
from envs.robocasa_env import CAMERAS
from envs.robocasa_standins import LAYOUT, STYLE
assert robocasa.models.assets_root == sys.argv[1], robocasa.models.assets_root
for name in sys.argv[2:]:
    env = robosuite.make(name, robots="PandaOmron", has_renderer=False, has_offscreen_renderer=True,
                         use_camera_obs=True, camera_names=list(CAMERAS), camera_heights=64, camera_widths=64,
                         layout_ids=LAYOUT, style_ids=STYLE, seed=0, ignore_done=True)
    obs = env.reset()
    for _ in range(5):
        obs, _, _, _ = env.step(np.zeros(env.action_dim))
    images = [obs[c + "_image"] for c in CAMERAS]
    print("episode", name, env.action_dim, env.layout_id, env.style_id, bool(env._check_success()),
          all(i.shape == (64, 64, 3) and i.std() > 1 for i in images), repr(env.get_ep_meta()["lang"]))
    env.close()
"""


def test_real_kitchen_tasks_reset_step_and_check_success_on_stand_in_assets(standins):
    """The real task classes in kitchen layout 1 / style 1, furnished by envs.robocasa_standins:
    reset, five steps of the 12-D action, three cameras rendering something other than one
    colour, and the task's own success check (False: nothing was done)."""
    env = {**os.environ, "ROBOCASA_ASSETS_PATH": str(standins), "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl")}
    r = subprocess.run([str(ROBOCASA_PYTHON), "-c", EPISODE, str(standins), *TASKS], capture_output=True, text=True,
                       timeout=600, cwd=REPO, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    for name in TASKS:
        line = next((ln for ln in r.stdout.splitlines() if ln.startswith(f"episode {name} ")), None)
        assert line is not None, r.stdout
        _, _, action_dim, layout, style, success, rendered, instruction = line.split(" ", 7)
        assert (action_dim, layout, style, success, rendered) == ("12", "1", "1", "False", "True"), line
        assert len(instruction) > 5, line


ADAPTER = """
import sys
import numpy as np
from envs.robocasa_env import MissingAssets, RoboCasaEnv
from envs.robocasa_standins import LAYOUT, STYLE

if sys.argv[1] == "missing":
    try:
        RoboCasaEnv("TurnOffMicrowave")
    except MissingAssets as e:
        print("missing:", e)
    sys.exit(0)
env = RoboCasaEnv("PickPlaceCabinetToCounter", resolution=64)  # the stand-ins' marker pins their kitchen
scenes = []
for seed in (3, 4, 3, 4):  # the env reused, as workers do; the last one, 4, is the scene the steps below run in
    obs, _ = env.reset(seed=seed)
    scenes.append((env.instruction, env.env.sim.data.qpos.copy(), env.env.sim.data.xpos.copy()))
same = lambda a, b: a[0] == b[0] and a[1].shape == b[1].shape and np.allclose(a[1], b[1]) and np.allclose(a[2], b[2], atol=1e-3)
print("same seed, same scene:", same(scenes[0], scenes[2]))  # every body, after another seed's episode
print("other seed, other scene:", not same(scenes[0], scenes[1]))
print("kitchen:", (env.env.layout_id, env.env.style_id) == (LAYOUT, STYLE))
base, z, opening = env.raw_obs["robot0_base_pos"].copy(), obs["state"][2], obs["state"][6] - obs["state"][7]
for _ in range(10):
    obs, _, _, truncated, info = env.step([0, 0, 1, 0, 0, 0, 1])  # up, closing the fingers
print("rose cm:", round(100 * float(obs["state"][2] - z), 1))
print("base moved mm:", round(1000 * float(np.abs(env.raw_obs["robot0_base_pos"] - base).max()), 2))
print("fingers closed by cm:", round(100 * float(opening - (obs["state"][6] - obs["state"][7])), 1))
print("steps, max:", info["steps"], env.max_steps, truncated)
# the same ten steps again, every one rendered: the last frame is the one seen after nine unrendered
env.reset(seed=4)
for k in range(10):
    unrendered, _, _, _, _ = env.step([0, 0, 1, 0, 0, 0, 1], render=k == 9)
    assert (unrendered["images"] == {}) == (k < 9)
same = all(np.array_equal(obs["images"][c], unrendered["images"][c]) for c in env.cameras)
print("unrendered steps, same last frame:", same)
try:
    env.step([0, 0, 1])
except ValueError as e:
    print("bad action:", e)
"""


def test_adapter_gives_our_observation_action_and_seeded_scenes(standins, tmp_path):
    """envs.robocasa_env on the stand-ins: a seed fixes the scene, our 7-D action moves the arm and
    the fingers with the mobile base held still, the dataset horizon bounds the episode, a bad action
    is named, and without assets the error names ROBOCASA_ASSETS_PATH and how to get them."""
    env = {**os.environ, "ROBOCASA_ASSETS_PATH": str(standins)}
    r = subprocess.run([str(ROBOCASA_PYTHON), "-c", ADAPTER, "run"], capture_output=True, text=True,
                       timeout=600, cwd=REPO, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    out = dict(line.split(": ", 1) for line in r.stdout.splitlines() if ": " in line)
    assert out["same seed, same scene"] == "True" and out["other seed, other scene"] == "True", r.stdout
    assert float(out["rose cm"]) > 2.0, r.stdout
    assert float(out["base moved mm"]) < 1.0, r.stdout
    assert float(out["fingers closed by cm"]) > 1.0, r.stdout
    assert out["steps, max"] == "10 450 False", r.stdout
    assert out["kitchen"] == "True" and out["unrendered steps, same last frame"] == "True", r.stdout
    assert "action must be 7 finite numbers" in out["bad action"], r.stdout
    (tmp_path / "empty").mkdir()
    r = subprocess.run([str(ROBOCASA_PYTHON), "-c", ADAPTER, "missing"], capture_output=True, text=True,
                       timeout=300, cwd=REPO, env={**os.environ, "ROBOCASA_ASSETS_PATH": str(tmp_path / "empty")})
    assert r.returncode == 0, r.stderr[-3000:]
    assert "ROBOCASA_ASSETS_PATH" in r.stdout and "robocasa-download-assets" in r.stdout, r.stdout


EXPERT_SEEDS = {"TurnOffMicrowave": (0, 1, 2), "StartCoffeeMachine": (0, 1, 2), "PickPlaceCabinetToCounter": (0, 7)}
EXPERT = """
import sys
import numpy as np
from envs.robocasa_env import RoboCasaEnv
from envs import UnsupportedTask
from envs.episodes import make_expert, run_expert_episode, run_handover_episode

task, seeds = sys.argv[1], [int(s) for s in sys.argv[2:]]
env = RoboCasaEnv(task, cameras=())  # physics only
for seed in seeds:
    success, steps, _ = run_expert_episode(env, seed=seed)
    print("expert", seed, success, steps, env.max_steps)
env.reset(seed=seeds[0])
success = False
for _ in range(60):  # the arm held still, the gripper open: nothing happens
    _, _, _, _, info = env.step(np.array([0, 0, 0, 0, 0, 0, -1.0]), render=False)
    success = success or info["success"]
print("idle", success)
print("takeover", run_handover_episode(env, init_state_index=0)[0])  # after random actions, as DAgger needs
env.task = "OpenDrawer"
try:
    make_expert(env)
except UnsupportedTask as e:
    print("unsupported", e)
"""


@pytest.mark.slow
@pytest.mark.parametrize("task", TASKS)
def test_expert_solves_the_task_and_doing_nothing_does_not(task, standins):
    """envs.robocasa_experts on the stand-in kitchen, from a few seeds each, within the horizon, and
    taking over after random actions; 60 steps of an arm held still solve nothing (so the check can
    fail); a task without an expert is named."""
    env = {**os.environ, "ROBOCASA_ASSETS_PATH": str(standins)}
    r = subprocess.run([str(ROBOCASA_PYTHON), "-c", EXPERT, task, *map(str, EXPERT_SEEDS[task])], capture_output=True,
                       text=True, timeout=600, cwd=REPO, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    lines = r.stdout.splitlines()
    runs = [line.split() for line in lines if line.startswith("expert ")]
    assert len(runs) == len(EXPERT_SEEDS[task]), r.stdout
    for _, seed, success, steps, horizon in runs:
        assert success == "True" and int(steps) <= int(horizon), (task, seed, r.stdout)
    assert "idle False" in lines and "takeover True" in lines, r.stdout
    assert any(line.startswith("unsupported ") and "OpenDrawer" in line for line in lines), r.stdout


def run_cli(module: str, *args, assets) -> subprocess.CompletedProcess:
    """One of our commands, from this interpreter (which has no robocasa: the env workers run under RoboCasa's)."""
    env = {**os.environ, "ROBOCASA_ASSETS_PATH": str(assets)}
    return subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True, timeout=900,
                          cwd=REPO, env=env)


@pytest.mark.slow
def test_robocasa_suite_collects_and_evaluates_the_expert_through_our_commands(standins, tmp_path):
    """suite=robocasa through vla.collect and vla.eval unchanged: the scripted expert's demonstrations
    become a LeRobot v3 dataset with the three cameras and each episode's own instruction, and the
    batched engine's env workers (started under .venv-robocasa) score the expert on every task."""
    r = run_cli("vla.collect", "suite=robocasa", "episodes_per_task=1", "resolution=64", f"out={tmp_path / 'demos'}",
                assets=standins)
    assert r.returncode == 0, r.stderr[-3000:]
    data = LeRobotDataset(tmp_path / "demos")
    suite = get_suite("robocasa")
    assert len(data.episodes) == len(suite.tasks)
    assert data.cameras == list(suite.cameras)
    for task in suite.tasks:  # each episode's instruction is its task's (the object named where the task has one)
        assert sum(task.says(t) for t in data.tasks) == 1, (task.instruction, data.tasks)
    sample = data[0]
    assert all(img.shape[:2] == (64, 64) for img in sample["images"].values())

    out = tmp_path / "eval"
    r = run_cli("vla.eval", "suite=robocasa", "eval.policy=scripted", "eval.trials_per_task=2", "eval.num_envs=2",
                "suite.resolution=64", "eval.save_videos=1", f"eval.out={out}", assets=standins)
    assert r.returncode == 0, r.stderr[-3000:]
    records = [json.loads(line) for line in (out / "episodes.jsonl").read_text().splitlines()]
    assert sorted((e["task"], e["init"]) for e in records) == [(t, k) for t in range(3) for k in range(2)]
    assert all(e["success"] and "error" not in e for e in records), records
    assert len(list((out / "videos").glob("*_success.mp4"))) == 3


def test_robocasa_commands_without_assets_fail_at_once_naming_the_variable(tmp_path):
    (tmp_path / "empty").mkdir()
    for module, args in (("vla.eval", ["eval.policy=random", f"eval.out={tmp_path / 'eval'}"]),
                         ("vla.collect", [f"out={tmp_path / 'demos'}"])):
        r = run_cli(module, "suite=robocasa", *args, assets=tmp_path / "empty")
        assert r.returncode != 0, r.stdout[-2000:]
        assert "ROBOCASA_ASSETS_PATH" in r.stderr and "robocasa-download-assets" in r.stderr, r.stderr[-2000:]
    assert not (tmp_path / "eval" / "episodes.jsonl").exists() or not (tmp_path / "eval" / "episodes.jsonl").read_text()

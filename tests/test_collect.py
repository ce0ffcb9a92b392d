"""Expert demonstrations recorded in the real simulator, written and read back as LeRobot v3."""

import json
import subprocess
import sys

import numpy as np
import pytest

from envs.episodes import is_noop, make_expert, record_episode
from envs.libero_env import LiberoEnv
from vla.dataset.collection import dataset_features
from vla.dataset.reader import LeRobotDataset
from vla.dataset.format import LeRobotWriter


def test_recorded_episode_reads_back_identically(tmp_path):
    env = LiberoEnv("libero_spatial", 0, resolution=64)
    success, frames = record_episode(env, make_expert(env), seed=3, init_state_index=None)
    env.close()
    assert success
    actions = frames["action"]
    assert not any(is_noop(actions[i], actions[i - 1]) for i in range(1, len(actions)))
    assert np.all(np.abs(actions) <= 1) and set(np.unique(actions[:, 6])) <= {-1.0, 1.0}

    writer = LeRobotWriter(tmp_path / "ds", fps=20, features=dataset_features(list(env.cameras), 64))
    writer.add_episode(frames, env.instruction)
    ds = LeRobotDataset(tmp_path / "ds", action_horizon=8)
    back = ds.episode_frames(0)
    np.testing.assert_array_equal(back["action"], actions)
    np.testing.assert_array_equal(back["state"], frames["observation.state"])
    for cam in env.cameras:
        np.testing.assert_array_equal(back["images"][cam], frames[f"observation.images.{cam}"])
    assert ds[0]["task"] == env.instruction and ds[0]["action"].shape == (8, 7)


@pytest.mark.slow
def test_collect_skips_a_task_without_an_expert_and_records_the_rest(tmp_path):
    """libero_90 task 35 (open the microwave) has no scripted skill: collection names it and goes
    on; task 33 (close the microwave) is recorded."""
    out = tmp_path / "l90"
    cmd = [sys.executable, "-m", "vla.collect", "suite=libero_90", "tasks=[35,33]", "episodes_per_task=1",
           "resolution=64", "cameras=[agentview]", f"out={out}"]
    run = subprocess.run(cmd, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "task 35: skipped" in run.stdout + run.stderr
    ds = LeRobotDataset(out)
    assert ds.info["total_episodes"] == 1 and ds[0]["task"] == "close the microwave"


@pytest.mark.slow
def test_collect_cli_resumes_without_duplicates(tmp_path):
    out = tmp_path / "spatial"
    cmd = [sys.executable, "-m", "vla.collect", "suite=libero_spatial", "tasks=[0]", "resolution=64", f"out={out}"]
    subprocess.run(cmd + ["episodes_per_task=1"], check=True, capture_output=True)
    first = LeRobotDataset(out).episode_frames(0)["action"]
    subprocess.run(cmd + ["episodes_per_task=2"], check=True, capture_output=True)
    info = json.loads((out / "meta/info.json").read_text())
    assert info["total_episodes"] == 2
    ds = LeRobotDataset(out)
    np.testing.assert_array_equal(ds.episode_frames(0)["action"], first)
    assert not np.array_equal(ds.episode_frames(1)["action"][:20], first[:20])  # a new layout, not a replay


def test_replayed_demonstration_reproduces_its_images_and_success():
    """The pipeline check behind every dataset: from the recorded seed, the recorded actions
    replayed open-loop give the same images (same renderer settings, orientation, resolution as
    evaluation, which builds its env the same way) and the same success."""
    from envs.episodes import run_expert_episode

    env = LiberoEnv("libero_spatial", 1, resolution=64)
    success, steps, frames = run_expert_episode(env, seed=11, record=True)
    assert success
    obs, _ = env.reset(seed=11)
    for k, (recorded, action) in enumerate(frames):
        for cam in env.cameras:
            np.testing.assert_array_equal(obs["images"][cam], recorded["images"][cam], err_msg=f"step {k} {cam}")
        np.testing.assert_array_equal(obs["state"], recorded["state"])
        obs, _, done, truncated, info = env.step(action)
    env.close()
    assert done and info["success"] and info["steps"] == steps


def test_dart_noise_perturbs_the_arm_but_records_the_experts_clean_actions():
    """noise=0.2 (DART): the executed motion wanders off the noise-free path, the expert corrects
    it and still succeeds, and the recorded labels are the expert's smooth proportional commands,
    not the noisy ones the arm executed."""
    from envs.episodes import run_expert_episode

    env = LiberoEnv("libero_spatial", 0, camera_obs=False)
    clean_ok, _, clean = run_expert_episode(env, seed=5, record=True)
    noisy_ok, _, noisy = run_expert_episode(env, seed=5, record=True, noise=0.2)
    env.close()
    assert clean_ok and noisy_ok
    eef = lambda frames: np.array([o["state"][:3] for o, _ in frames[:60]])  # noqa: E731
    assert np.abs(eef(noisy) - eef(clean)).max() > 0.005  # the arm went somewhere else
    labels = np.array([a for _, a in noisy])[:, :3]
    # executed = label + N(0, 0.2): consecutive executed steps would differ by ~0.23 on average
    assert np.abs(np.diff(labels, axis=0)).mean() < 0.1


@pytest.mark.slow
def test_parallel_collection_writes_one_dataset_with_a_serial_runs_episodes(tmp_path):
    """workers=2: two env workers record a task each, this process writes both into one dataset;
    a task's episodes do not depend on the split (same seeds as a serial run)."""
    out = tmp_path / "spatial"
    cmd = [sys.executable, "-m", "vla.collect", "suite=libero_spatial", "tasks=[0,1]", "resolution=64", f"out={out}",
           "episodes_per_task=1"]
    subprocess.run(cmd + ["workers=2"], check=True, capture_output=True)
    ds = LeRobotDataset(out)
    assert len(ds.episodes) == 2 and len(ds.tasks) == 2
    serial = tmp_path / "serial"
    subprocess.run(cmd[:-2] + [f"out={serial}", "episodes_per_task=1", "tasks=[1]"], check=True, capture_output=True)
    task1 = [e["episode_index"] for e in ds.episodes if e["tasks"] == LeRobotDataset(serial).tasks]
    assert len(task1) == 1
    np.testing.assert_array_equal(LeRobotDataset(serial).episode_frames(0)["action"], ds.episode_frames(task1[0])["action"])

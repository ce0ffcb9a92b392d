"""Batched rollout evaluation with real LIBERO env workers."""

import json
import os
import signal
import subprocess
import sys
import time

import av
import psutil
import pytest
from conftest import load_config

from eval_rollouts import engine
from eval_rollouts.engine import ExpertPolicy
from eval_rollouts.results import ResultsLog, wilson
from eval_rollouts.worker import EnvSpec
from vla.eval import evaluate

SMALL = ["suite.resolution=64", "eval.num_envs=2"]


def test_scripted_expert_through_the_batched_engine(tmp_path):
    cfg = load_config(*SMALL, "eval.policy=scripted", "eval.tasks=[0,1]", "eval.trials_per_task=3",
                      "eval.save_videos=1", f"eval.out={tmp_path}")
    summary = evaluate(cfg)
    assert summary["episodes"] == 6 and summary["successes"] >= 5
    table = (tmp_path / "success.md").read_text()
    assert "| 0 | pick up the black bowl between the plate and the ramekin" in table
    assert json.loads((tmp_path / "success.json").read_text())["episodes"] == 6
    assert (tmp_path / "success.png").stat().st_size > 1000
    records = [json.loads(l) for l in (tmp_path / "episodes.jsonl").read_text().splitlines()]
    assert sorted((r["task"], r["init"]) for r in records) == [(t, k) for t in (0, 1) for k in range(3)]
    videos = sorted((tmp_path / "videos").glob("*.mp4"))
    assert len(videos) == 2
    rec = next(r for r in records if r.get("video") == str(videos[0]))
    with av.open(str(videos[0])) as f:
        frames = [fr.to_ndarray(format="rgb24") for fr in f.decode(video=0)]
    assert len(frames) == rec["steps"] + 1 and frames[0].shape[1] >= 2 * 64  # both cameras side by side


def test_a_failing_policy_runs_the_whole_step_budget_and_scores_nothing(tmp_path):
    summary = evaluate(load_config(*SMALL, "eval.policy=random", "eval.tasks=[0]", "eval.trials_per_task=2",
                                   "eval.max_steps=40", "eval.save_videos=0", f"eval.out={tmp_path}"))
    assert summary["episodes"] == 2 and summary["successes"] == 0 and summary["errors"] == 0
    records = [json.loads(l) for l in (tmp_path / "episodes.jsonl").read_text().splitlines()]
    assert [(r["success"], r["steps"]) for r in records] == [(False, 40), (False, 40)]  # not cut short, not counted


class KillsAWorker(ExpertPolicy):
    """The expert, except that on its 5th call one env worker process is SIGKILLed mid-episode."""

    def __init__(self):
        self.calls = 0

    def act(self, obs_batch):
        self.calls += 1
        if self.calls == 5:
            workers = [p for p in psutil.Process().children() if "eval_rollouts.worker" in p.cmdline()]
            os.kill(workers[0].pid, signal.SIGKILL)
        return super().act(obs_batch)


@pytest.mark.slow
def test_a_dead_worker_is_replaced_and_its_episode_retried(tmp_path):
    log = ResultsLog(tmp_path / "episodes.jsonl")
    spec = EnvSpec("libero_spatial", ("agentview",), 64, expert=True)
    engine.run(KillsAWorker(), spec, [(0, 0), (0, 1)], log, num_envs=2)
    assert sorted((r["task"], r["init"]) for r in log.records) == [(0, 0), (0, 1)]
    assert all(r["success"] and "error" not in r for r in log.records)
    assert sum(r.get("retried", False) for r in log.records) == 1


def test_goal_predicates_are_reported_as_the_episode_reaches_them():
    """LIBERO-10 task 2 (turn on the stove, then the moka pot onto it): none holds at the start,
    the knob's goal holds alone for a while, both at success; an evaluation records how many an
    episode reached and the table shows the share per task."""
    from envs.episodes import make_expert
    from envs.libero_env import LiberoEnv
    from envs.robot_state import grasps_before_each_step
    from eval_rollouts.results import markdown, summarize

    e = LiberoEnv("libero_10", 2, camera_obs=False)
    obs, _ = e.reset(init_state_index=0)
    assert e.goals_met() == [False, False]
    expert, seen, grippers, grasps = make_expert(e), [], [], [obs["grasps"]]
    expert.reset()
    for _ in range(e.max_steps):
        action = expert.act(obs)
        obs, _, done, truncated, info = e.step(action)
        seen.append(tuple(info["goals_met"]))
        grippers.append(action[-1])
        grasps.append(obs["grasps"])
        if done or truncated:
            break
    e.close()
    assert info["success"] and seen[-1] == (True, True) and (True, False) in seen and (False, True) not in seen
    # the grasp count: the knob let go of while its goal holds alone, and what a dataset of these
    # commands gives each frame (vla.dataset.reader) is what the env reported with it
    assert grasps[0] == 0 and (1, (True, False)) in zip(grasps[1:], seen)
    assert grasps[:-1] == grasps_before_each_step(grippers).tolist()
    records = [{"task": 2, "init": 0, "success": False, "steps": 520, "goals": [1, 2]},
               {"task": 2, "init": 1, "success": True, "steps": 300, "goals": [2, 2]},
               {"task": 5, "init": 0, "success": False, "steps": 520, "goals": [0, 1]}]
    summary = summarize(records, {2: "stove", 5: "book"})
    assert summary["tasks"][0]["goals_reached"] == 0.75 and "goals_reached" not in summary["tasks"][1]
    assert "| 2 | stove | 1/2 (50%) | 9-91% | 75% | 0 |" in markdown(summary, "t")


def test_an_environment_failure_is_named_and_counted_apart(tmp_path):
    """A worker whose env raises (here a layout seed beyond numpy's range, which vla.eval refuses
    up front) fails the episode twice: the record names the cause, the table counts it apart,
    the rates leave it out, vla.eval's check fails, and a rerun retries it."""
    from eval_rollouts.results import markdown, summarize
    from vla.eval import check_errors

    log = ResultsLog(tmp_path / "episodes.jsonl")
    spec = EnvSpec("libero_spatial", ("agentview",), 64, expert=True, layouts="random", layout_seed_base=2**32)
    engine.run(ExpertPolicy(), spec, [(0, 0)], log, num_envs=1)
    bad = EnvSpec("libero_spatial", ("agentview",), 64, expert=True)
    engine.run(ExpertPolicy(), bad, [(0, 1)], log, num_envs=1)
    (failed, ok) = log.records
    assert failed["error"].startswith("env worker failed: ValueError: seed must be an int in 0..2**32-1"), failed
    assert ok["success"] and "error" not in ok and ok["goals"] == [1, 1]  # its one goal predicate, reached
    summary = summarize(log.records, {0: "x"})
    assert (summary["successes"], summary["episodes"], summary["errors"], summary["success_rate"]) == (1, 1, 1, 1.0)
    table = markdown(summary, "t")
    assert "1 episode(s) failed in the environment" in table and "| 1/1 (100%) | 21-100% | 1 |" in table
    with pytest.raises(ValueError, match="1 of 2 episodes failed in the environment"):
        check_errors(summary, 0.02, tmp_path)
    assert ResultsLog(tmp_path / "episodes.jsonl").done == {(0, 1)}  # the errored one runs again


def test_layout_seeds_beyond_numpys_range_are_refused_before_anything_runs(tmp_path):
    with pytest.raises(ValueError, match="layout seeds up to 4294967305, beyond numpy's 2\\*\\*32-1"):
        evaluate(load_config(*SMALL, "eval.policy=random", "eval.layouts=random", "eval.layout_seed_base=4294967296",
                             "eval.tasks=[0]", "eval.trials_per_task=10", f"eval.out={tmp_path}"))
    assert not (tmp_path / "episodes.jsonl").exists()


@pytest.mark.slow
def test_a_killed_evaluation_resumes_to_the_same_table(tmp_path):
    args = [sys.executable, "-m", "vla.eval", *SMALL, "eval.num_envs=1", "eval.policy=scripted", "eval.tasks=[0]",
            "eval.trials_per_task=3", "eval.save_videos=0", f"eval.out={tmp_path}"]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    log = tmp_path / "episodes.jsonl"
    deadline = time.time() + 300
    while not (log.exists() and log.read_text().count("\n") >= 1):
        assert proc.poll() is None and time.time() < deadline, "evaluation ended before its first episode"
        time.sleep(0.2)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done_before = log.read_text().count("\n")
    assert done_before < 3
    subprocess.run(args, check=True, capture_output=True)
    records = [json.loads(l) for l in log.read_text().splitlines()]
    assert sorted(r["init"] for r in records) == [0, 1, 2]  # nothing re-run, nothing counted twice
    assert json.loads((tmp_path / "success.json").read_text())["successes"] == 3


def test_wilson_interval():
    lo, hi = wilson(0, 10)
    assert lo == 0 and 0.27 < hi < 0.28  # the textbook value 0.278
    lo, hi = wilson(50, 50)
    assert 0.92 < lo < 0.93 and hi == 1.0
    lo, hi = wilson(5, 10)
    assert abs(lo + hi - 1) < 1e-12  # symmetric around one half


def test_training_evaluates_its_final_checkpoint(demo_dataset, tmp_path):
    from vla.train import train

    ckpt = train(load_config("model.vocab=bytes", "train.resolution=64", f"train.dataset={demo_dataset}",
                             f"train.output_dir={tmp_path}", "train.max_steps=2", "train.eval_trials_per_task=1",
                             "eval.tasks=[0]", "eval.max_steps=15", "eval.num_envs=1", "eval.save_videos=0"))
    summary = json.loads((tmp_path / "eval" / ckpt.name / "success.json").read_text())
    assert summary["episodes"] == 1 and summary["tasks"][0]["task"] == 0
    assert list((tmp_path / "tb").glob("events.out.tfevents.*"))
    # the checkpoint records what it learned (LIBERO-Spatial task 0 only): a suite none of whose
    # tasks it learned is refused before anything runs, tasks it never saw are warned about
    assert json.loads((ckpt / "policy.json").read_text())["tasks"] == [
        "pick up the black bowl between the plate and the ramekin and place it on the plate"]
    with pytest.raises(ValueError, match=r"trained on suite=libero_spatial, and none of the 10 evaluated tasks of "
                                         r"suite=libero_object .* evaluate it with suite=libero_spatial"):
        evaluate(load_config(*SMALL, "suite=libero_object", f"eval.checkpoint={ckpt}", f"eval.out={tmp_path / 'x'}"))
    assert not (tmp_path / "x").exists()
    with pytest.warns(UserWarning, match=r"tasks \[1\] of suite=libero_spatial are not among its instructions"):
        evaluate(load_config(*SMALL, f"eval.checkpoint={ckpt}", "eval.tasks=[0,1]", "eval.trials_per_task=1",
                             "eval.max_steps=2", "eval.save_videos=0", f"eval.out={tmp_path / 'y'}"))
    # a checkpoint from before policy.json listed its tasks: its config's suite stands for them
    with pytest.raises(ValueError, match="trained on suite=libero_spatial, and none of the 10 evaluated tasks of suite=libero_goal"):
        evaluate(load_config(*SMALL, "suite=libero_goal", "eval.checkpoint=checkpoints/tiny-libero_spatial"))


def test_video_frames_show_the_whole_instruction_at_a_watchable_size():
    """Two 64x64 cameras become a 512x256 picture under a caption band; the longest LIBERO
    instruction is wrapped into lines that each fit the frame, none of its words cut."""
    import numpy as np

    from envs.suites import get_suite
    from eval_rollouts.videos import _font, caption_lines, compose_frame

    longest = max((t.instruction for s in ("libero_10", "libero_90", "libero_goal") for t in get_suite(s).tasks), key=len)
    images = {c: np.full((64, 64, 3), 90, np.uint8) for c in ("agentview", "robot0_eye_in_hand")}
    frame = compose_frame(images, "FAILURE after 520 steps", longest, False)
    lines = caption_lines(longest, 512)
    assert frame.shape[1] == 512 and frame.shape[0] > 256 + 20 * len(lines)
    assert " ".join(lines) == longest and len(lines) >= 2
    assert all(_font().getlength(line) <= 512 - 8 for line in lines)
    assert (frame[-256:] == 90).all()  # the cameras, scaled 4x, unchanged below the band

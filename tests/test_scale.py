"""Scale-out on real engines: rollouts and collection on a real two-node Ray cluster started here
(`ray start`, a head and one more node, one CPU each, torn down after), and training in two
processes through `accelerate launch` (gloo, CPU)."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil
import pytest
from omegaconf import OmegaConf

from eval_rollouts import engine
from eval_rollouts.engine import ExpertPolicy
from eval_rollouts.results import ResultsLog
from eval_rollouts.worker import EnvSpec
from vla.dataset.collection import collect
from vla.dataset.reader import LeRobotDataset

SPEC = EnvSpec("libero_spatial", ("agentview",), 64, expert=True)
EPISODES = [(0, 0), (0, 1), (1, 0), (1, 1)]


@pytest.fixture(scope="module")
def ray_cluster():
    """A head and a second node on this machine (each `ray start --block`, stopped by SIGTERM):
    the address, with this process connected as the driver. Token authentication off, explicitly:
    Ray 2.60 turns it on for a local `ray.init()` and writes ~/.ray/auth_token, which a later
    `ray start` then enforces while a driver without RAY_AUTH_MODE=token sends no token."""
    import ray

    mode = os.environ.get("RAY_AUTH_MODE")
    os.environ["RAY_AUTH_MODE"] = "disabled"

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    address = f"127.0.0.1:{port}"
    common = ["--num-cpus=1", "--object-store-memory=80000000", "--disable-usage-stats", "--block"]
    ray_cli = os.path.join(os.path.dirname(sys.executable), "ray")
    nodes = [subprocess.Popen([ray_cli, "start", "--head", f"--port={port}", "--include-dashboard=false", *common],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    try:
        deadline = time.time() + 120
        while not ray.is_initialized():
            try:
                ray.init(address=address, log_to_driver=False)
            except (ConnectionError, RuntimeError):  # the head's GCS is still starting
                ray.shutdown()
                assert time.time() < deadline, "the Ray head did not come up"
                time.sleep(1)
        nodes.append(subprocess.Popen([ray_cli, "start", f"--address={address}", *common],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        while len([n for n in ray.nodes() if n["Alive"]]) < 2:
            assert time.time() < deadline, "the second Ray node did not join"
            time.sleep(0.5)
        yield address
    finally:
        ray.shutdown()
        for p in reversed(nodes):
            p.send_signal(signal.SIGTERM)
        for p in nodes:
            p.wait(timeout=120)
        if mode is None:
            os.environ.pop("RAY_AUTH_MODE")
        else:
            os.environ["RAY_AUTH_MODE"] = mode


def outcomes(log: ResultsLog) -> list[tuple]:
    return sorted((r["task"], r["init"], r["success"], r["steps"]) for r in log.records)


@pytest.mark.slow
def test_ray_evaluation_spreads_over_both_nodes_with_the_local_outcomes(ray_cluster, tmp_path):
    """eval.backend=ray: the env workers are actors on the two nodes (each episode logs its node);
    the scripted policy gets the same per-episode outcomes as with local worker processes."""
    ray_log = ResultsLog(tmp_path / "ray.jsonl")
    engine.run(ExpertPolicy(), SPEC, EPISODES, ray_log, num_envs=2, backend="ray", ray_address=ray_cluster)
    local_log = ResultsLog(tmp_path / "local.jsonl")
    engine.run(ExpertPolicy(), SPEC, EPISODES, local_log, num_envs=2)
    assert outcomes(ray_log) == outcomes(local_log)
    assert all(r["success"] for r in ray_log.records)
    assert len({r["node"] for r in ray_log.records}) == 2
    assert not any("node" in r for r in local_log.records)


class KillsAnActor(ExpertPolicy):
    """The scripted expert, which kills one env actor's process (as a node losing it would) at its 5th call."""

    calls = 0

    def act(self, obs_batch):
        self.calls += 1
        if self.calls == 5:
            actors = [p for p in psutil.process_iter(["cmdline"]) if "EnvActor" in " ".join(p.info["cmdline"] or [])]
            os.kill(actors[0].pid, signal.SIGKILL)
        return super().act(obs_batch)


@pytest.mark.slow
def test_a_killed_actor_loses_nothing(ray_cluster, tmp_path):
    log = ResultsLog(tmp_path / "episodes.jsonl")
    engine.run(KillsAnActor(), SPEC, EPISODES[:2], log, num_envs=2, backend="ray", ray_address=ray_cluster)
    assert sorted((r["task"], r["init"]) for r in log.records) == EPISODES[:2]
    assert all(r["success"] and "error" not in r for r in log.records)
    assert sum(r.get("retried", False) for r in log.records) == 1


@pytest.mark.slow
def test_ray_collection_writes_one_dataset_with_the_local_episodes(ray_cluster, tmp_path):
    """vla.collect backend=ray: two actors record a task each, this process writes the dataset;
    each task's episode is the one a local collection records (its seeds do not depend on where it ran)."""
    def run(out, **more):
        return LeRobotDataset(collect(OmegaConf.create({
            "suite": {"name": "libero_spatial"}, "episodes_per_task": 1, "tasks": [0, 1], "cameras": ["agentview"],
            "resolution": 64, "render_quality": "lowpoly", "layouts": "random", "max_attempts_per_episode": 3,
            "seed": 0, "out": str(tmp_path / out), "workers": 2, **more})))

    remote, local = run("ray", backend="ray", ray_address=ray_cluster), run("local")
    assert len(remote.episodes) == 2 and sorted(remote.tasks) == sorted(local.tasks)
    for task in local.tasks:
        actions = [d.episode_frames(next(e["episode_index"] for e in d.episodes if e["tasks"] == [task]))["action"]
                   for d in (remote, local)]
        np.testing.assert_array_equal(*actions)


@pytest.mark.slow
@pytest.mark.parametrize("config, kind", [("ddp_8gpu", "MULTI_CPU"), ("fsdp_8gpu", "FSDP")])
def test_training_in_two_processes_resumes_exactly(config, kind, demo_dataset, tmp_path):
    """The shipped accelerate configs (configs/accelerate/) with --num_processes 2 on a machine
    without a GPU: DDP over gloo, and FSDP2 (forced on by tests/fsdp_on_cpu.py: accelerate runs
    FSDP only on GPUs). Stopped at step 2 and resumed, the run's losses are an uninterrupted run's:
    the sharded weights and AdamW state are gathered into the checkpoint and sharded again."""
    here = Path(__file__).resolve().parent
    script = [str(here / "fsdp_on_cpu.py")] if kind == "FSDP" else ["-m", "vla.train"]
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(here.parent / "configs" / "accelerate" / f"{config}.yaml"),
           "--num_processes", "2", *script, "~recipe", "model.vocab=bytes", "train.resolution=64", f"train.dataset={demo_dataset}",
           "train.max_steps=4", "train.save_every=2", "train.log_every=1", "train.batch_size=2", "train.eval_trials_per_task=0"]
    runs = {}
    for name, extra in (("whole", []), ("cut", ["train.stop_at=2"]), ("cut", [])):
        r = subprocess.run(cmd + [f"train.output_dir={tmp_path / name}", *extra], capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, r.stderr[-3000:]
        runs.setdefault(name, []).append(r.stdout)
    assert f"on 2 processes ({kind})" in runs["whole"][0] and "mixed precision bf16" in runs["whole"][0]  # the config's
    assert "(step 2)" in runs["cut"][1]
    curves = [[json.loads(line)["loss"] for line in (tmp_path / name / "metrics.jsonl").read_text().splitlines()]
              for name in ("whole", "cut")]
    assert len(curves[0]) == 4 and curves[0] == curves[1]


def test_processes_take_disjoint_shares_of_each_steps_batch():
    from vla.training.loop import batch_indices, step_indices

    shares = [next(batch_indices(100, 4, 0, 7, rank, 3)) for rank in range(3)]
    assert sorted(sum(shares, [])) == sorted(step_indices(100, 12, 0, 7))  # the 12 of a 3-process step, none twice
    assert next(batch_indices(100, 4, 0, 7)) == step_indices(100, 4, 0, 7)  # one process: the batches as before

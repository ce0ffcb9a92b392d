"""Collect scripted-expert demonstrations into a LeRobotDataset v3.0 folder.

python -m vla.collect suite=libero_spatial episodes_per_task=2 cameras=[agentview,robot0_eye_in_hand] resolution=128

Only successful episodes are kept; no-op steps are dropped. Resumable: rerunning the same
command continues where a killed run stopped, with no duplicate or half-written episode.
"""

from __future__ import annotations

import json
import os
import time
from collections import deque
from pathlib import Path

from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from .format import LeRobotWriter, image_feature, vector_feature

STATE_NAMES = ["eef_x", "eef_y", "eef_z", "eef_ax", "eef_ay", "eef_az", "gripper_left", "gripper_right"]
ACTION_NAMES = ["dx", "dy", "dz", "droll", "dpitch", "dyaw", "gripper"]


def dataset_features(cameras: list[str], resolution: int) -> dict:
    feats = {f"observation.images.{c}": image_feature(resolution, resolution) for c in cameras}
    feats["observation.state"] = vector_feature(STATE_NAMES)
    feats["action"] = vector_feature(ACTION_NAMES)
    return feats


class _Attempts:
    """Per-task attempt counters, saved before each attempt so a resumed run never replays a seed."""

    def __init__(self, path: Path):
        self.path = path
        self.counts = json.loads(path.read_text()) if path.exists() else {}

    def start(self, task: int) -> int:
        n = self.counts.get(str(task), 0)
        self.counts[str(task)] = n + 1
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.counts))
        os.replace(tmp, self.path)
        return n


def collect(cfg: DictConfig) -> Path:
    from envs.suites import get_suite

    suite = get_suite(cfg.suite.name)
    tasks = list(range(len(suite.tasks))) if cfg.tasks is None else [suite.task(t).index for t in cfg.tasks]
    suite.check_cameras(cfg.cameras)
    if cfg.layouts not in ("random", "fixed"):
        raise ValueError(f"layouts must be 'random' or 'fixed', got {cfg.layouts!r}")
    if not isinstance(cfg.seed, int) or not 0 <= cfg.seed < 990:  # seeds stay below validation's 10^9
        raise ValueError(f"seed must be an int in 0..989 (layout seeds seed*1000003 + ... stay apart from validation's), got {cfg.seed!r}")
    if not 0.0 <= float(cfg.get("noise", 0.0)) <= 1.0:
        raise ValueError(f"noise must be a standard deviation in 0..1 (action units), got {cfg.noise!r}")
    return _collect(cfg, tasks)


def _collect(cfg: DictConfig, tasks: list[int]) -> Path:
    """`workers` env workers (local processes, or Ray actors with backend=ray), each recording one
    task's attempts at a time, in order (so a task's seeds, and episodes, are those of a serial
    run); this process writes every successful episode as it comes (one writer, resumable)."""
    from envs.suites import get_suite
    from eval_rollouts.engine import start_worker
    from eval_rollouts.worker import EnvSpec

    suite, out = get_suite(cfg.suite.name), Path(cfg.out)
    noise = float(cfg.get("noise", 0.0))
    recording = {"render_quality": cfg.render_quality, **({"dart_noise": noise} if noise else {})}
    writer = LeRobotWriter(out, fps=suite.control_freq, features=dataset_features(list(cfg.cameras), cfg.resolution),
                           recording=recording)
    attempts = _Attempts(out / "meta" / "vla_collect_attempts.json")
    have = {t: sum(any(suite.tasks[t].says(i) for i in e["tasks"]) for e in writer.episodes) for t in tasks}
    want, budget = cfg.episodes_per_task, cfg.episodes_per_task * cfg.max_attempts_per_episode
    todo = deque(t for t in tasks if have[t] < want)
    bar = tqdm(total=len(tasks) * want, initial=sum(min(h, want) for h in have.values()), unit="ep",
               desc=f"collect {suite.name}")
    spec = EnvSpec(suite.name, tuple(cfg.cameras), int(cfg.resolution), cfg.render_quality)
    workers = [start_worker(spec, suite.python, cfg.get("backend", "local"), cfg.get("ray_address"))
               for _ in range(min(int(cfg.get("workers", 1)), len(todo)))]
    busy: dict[int, int] = {}  # worker index -> the task it is recording
    tried = succeeded = 0
    t0 = time.time()

    def attempt(i: int, t: int) -> bool:
        """Send worker i task t's next attempt; False when t has its episodes or ran out of attempts."""
        if have[t] >= want:
            return False
        n = attempts.start(t)
        if n >= budget:
            tqdm.write(f"task {t}: gave up after {n} attempts with {have[t]}/{want} successful episodes")
            return False
        init = None if cfg.layouts == "random" else n % suite.init_states_per_task
        workers[i].send("demo", (t, cfg.seed * 1_000_003 + t * 10_007 + n, init, noise))
        busy[i] = t
        return True

    def next_task(i: int) -> None:
        busy.pop(i, None)
        while todo and not attempt(i, todo.popleft()):
            pass

    try:
        for i in range(len(workers)):
            next_task(i)
        while busy:
            for w in type(workers[0]).wait([workers[i] for i in busy]):
                i = workers.index(w)
                t, reply = busy[i], w.recv()
                if "unsupported" in reply:  # a libero_90 goal with no scripted skill: the other tasks still get their demos
                    tqdm.write(f"task {t}: skipped, {reply['unsupported']}")
                    bar.update(want - have[t])
                    next_task(i)
                    continue
                tried += 1
                if reply["success"]:
                    succeeded += 1
                    writer.add_episode(reply["frames"], task=reply["instruction"])
                    have[t] += 1
                    bar.update(1)
                bar.set_postfix(success=f"{succeeded}/{tried}", eps_per_s=f"{succeeded / (time.time() - t0):.3f}")
                if not attempt(i, t):
                    next_task(i)
    finally:
        for w in workers:
            w.close()
        bar.close()
    print(f"dataset: {out} ({writer.num_episodes} episodes, {writer.num_frames} frames)")
    return out


def collect_demos(suite: str, out, episodes_per_task: int, cameras: list[str], resolution: int,
                  tasks: list[int] | None = None, seed: int = 0, workers: int = 1) -> Path:
    """collect() with configs/collect.yaml's defaults, from code (training's auto-collection, benchmarks)."""
    return collect(OmegaConf.create({
        "suite": {"name": suite}, "episodes_per_task": episodes_per_task, "tasks": tasks, "cameras": list(cameras),
        "resolution": resolution, "render_quality": "lowpoly", "layouts": "random", "max_attempts_per_episode": 3,
        "seed": seed, "out": str(out), "workers": workers}))


def merge_datasets(sources: list, out) -> Path:
    """Append the episodes of each source dataset (same features, fps and recording settings)
    to `out`, in order: e.g. collections of separate task ranges run in parallel. Rows and their
    per-episode statistics are copied as stored (PNG bytes and all), nothing is decoded.
    Resumable: rerun with the same sources, the episodes `out` already holds are skipped."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from .format import DATA_PATH, EPISODES_PATH, STAT_NAMES, DatasetError
    from .reader import load_info

    out = Path(out)
    writer, skip = None, None
    for src in map(Path, sources):
        info = load_info(src)
        feats = {k: v for k, v in info["features"].items() if k.startswith("observation.") or k == "action"}
        if any(f["dtype"] == "video" for f in feats.values()):
            raise DatasetError(f"{src}: merging needs image columns, not videos")
        if writer is None:
            writer = LeRobotWriter(out, fps=info["fps"], features=feats, recording=info.get("vla", {}))
            skip = writer.num_episodes
        for e in tqdm(pq.read_table(src / EPISODES_PATH).to_pylist(),
                      desc=f"merge {src.name}", unit="ep"):
            if skip:
                skip -= 1
                continue
            table = pq.read_table(src / DATA_PATH.format(chunk_index=e["data/chunk_index"], file_index=e["data/file_index"]))
            table = table.filter(pc.equal(table["episode_index"], e["episode_index"]))
            stats = {k: {s: e[f"stats/{k}/{s}"] for s in STAT_NAMES} for k in feats if f"stats/{k}/min" in e}
            writer.add_table(table, e["tasks"][0], stats)
    print(f"dataset: {out} ({writer.num_episodes} episodes, {writer.num_frames} frames)")
    return out

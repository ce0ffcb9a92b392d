"""The batched rollout engine: N env workers, ONE policy.act call per step over every worker
that has an observation ready, action chunks executed open-loop for `replan_steps` (default: the whole chunk), finished
workers recycled onto the next (task, init state). A worker that dies is restarted and its
episode retried once; every finished episode is logged before the next one starts."""

from __future__ import annotations

import functools
import time
from collections import deque
from pathlib import Path

import numpy as np
from tqdm import tqdm

from policies.transforms import stack_observations

from .results import ResultsLog
from .videos import write_video
from .worker import EnvSpec, EnvWorker


def start_worker(spec: EnvSpec, python: str | None = None, backend: str = "local", ray_address: str | None = None):
    """An env worker: a process here (backend local) or a Ray actor on some node of a cluster
    (backend ray, eval_rollouts.ray_workers); both answer send / poll / recv / close alike."""
    if backend == "ray":
        from .ray_workers import RayEnvWorker

        return RayEnvWorker(spec, python, ray_address)
    if backend != "local":
        raise ValueError(f"backend must be local or ray, not {backend!r}")
    return EnvWorker(spec, python)


class ExpertPolicy:
    """policy=scripted: the action the worker's scripted expert chose for the observation it sent."""

    def reset(self) -> None:
        pass

    def act(self, obs_batch: dict) -> np.ndarray:
        acts = obs_batch["expert_action"]
        if any(a is None for a in acts):
            raise ValueError("the scripted expert has no strategy for one of these tasks")
        return np.stack([np.asarray(a, np.float32) for a in acts])[:, None, :]


def run(policy, spec: EnvSpec, episodes: list[tuple[int, int]], log: ResultsLog, num_envs: int = 4,
        replan_steps: int | None = None, video_dir: Path | None = None, video_episodes: set = frozenset(),
        python: str | None = None, instructions: dict | None = None, on_episode=None, backend: str = "local",
        ray_address: str | None = None) -> list[dict]:
    """Run the episodes not yet in `log`. on_episode(record, labelled): called after each
    episode's record is logged, with its labelled steps (spec.label: DAgger's relabelling).
    backend: local worker processes, or ray actors on the cluster at ray_address (eval_rollouts.ray_workers)."""
    todo = deque(e for e in episodes if e not in log.done)
    bar = tqdm(total=len(episodes), initial=len(episodes) - len(todo), unit="ep",
               desc=f"{'label' if spec.label else 'eval'} {spec.suite}")
    if not todo:
        bar.close()
        return log.records
    record = bool(video_episodes) and video_dir is not None
    new_worker = functools.partial(start_worker, spec, python, backend, ray_address)
    workers = [new_worker() for _ in range(min(num_envs, len(todo)))]
    state: dict[int, dict] = {}  # worker index -> its episode: key, tries, latest reply, frames, start time
    t0, done_now = time.time(), 0
    policy.reset()

    def start(i: int, key=None, tries: int = 0) -> None:
        if key is None:
            if not todo:
                state.pop(i, None)
                return
            key = todo.popleft()
        state[i] = {"key": key, "tries": tries, "reply": None, "pending": "reset", "frames": [], "labelled": [],
                    "t": time.time()}
        workers[i].send("reset", (*key, record and key in video_episodes))

    def finish(i: int, success: bool, steps: int, error: str | None = None, goals=None) -> None:
        nonlocal done_now
        s = state[i]
        rec = {"task": s["key"][0], "init": s["key"][1], "success": bool(success), "steps": steps,
               "seconds": round(time.time() - s["t"], 2)}
        if goals:  # [goal predicates that held at some step, goal predicates]
            rec["goals"] = goals
        if s["tries"]:
            rec["retried"] = True
        if s.get("node"):
            rec["node"] = s["node"]
        if s.get("perturbation"):
            rec["perturbation"] = s["perturbation"]
        if error:
            rec["error"] = error
        if record and s["key"] in video_episodes and s["frames"]:
            name = f"task{s['key'][0]:02d}_init{s['key'][1]:02d}_{'success' if success else 'failure'}.mp4"
            rec["video"] = str(write_video(video_dir / name, s["frames"], s["instruction"], success))
        labelled = [] if error else s["labelled"]  # a worker that failed twice leaves no partial episode
        if spec.label:
            rec["labelled_steps"] = len(labelled)
        log.add(rec)
        if on_episode is not None:
            on_episode(rec, labelled)
        done_now += 1
        bar.update(1)
        ok = sum(r["success"] for r in log.records)
        bar.set_postfix(success=f"{ok}/{len(log.records)}", eps_per_s=f"{done_now / (time.time() - t0):.3f}")
        start(i)

    def receive(i: int) -> None:
        try:
            reply = workers[i].recv()
        except RuntimeError as e:  # dead or failed: a fresh worker, and one more try for the episode
            workers[i].close()
            workers[i] = new_worker()
            s = state[i]
            if s["tries"] == 0:
                tqdm.write(f"worker {i} failed on task {s['key'][0]} init {s['key'][1]}; retrying once")
                start(i, s["key"], tries=1)
            else:
                finish(i, False, 0, error=str(e).splitlines()[0])
            return
        s = state[i]
        s["pending"] = None
        s["frames"] += reply.pop("frames")
        s["labelled"] += reply.pop("labelled", [])
        if "instruction" in reply:
            s["instruction"] = reply["instruction"]
        if "node" in reply:
            s["node"] = reply.pop("node")
        if "perturbation" in reply:
            s["perturbation"] = reply.pop("perturbation")
        if reply["done"]:
            finish(i, reply["success"], reply["steps"], goals=reply.get("goals"))
        else:
            reply["obs"]["instruction"] = s["instruction"]
            s["reply"] = reply

    try:
        for i in range(len(workers)):
            start(i)
        while state:
            # steps come back fast: wait for all of them; resets (seconds) join when they are ready
            for i in [i for i, s in state.items() if s["pending"] == "step"]:
                receive(i)
            resetting = [i for i, s in state.items() if s["pending"] == "reset"]
            if resetting and not any(s["reply"] is not None for s in state.values()):
                type(workers[resetting[0]]).wait([workers[i] for i in resetting])
            for i in resetting:
                if i in state and state[i]["pending"] == "reset" and workers[i].poll():
                    receive(i)
            live = [i for i, s in state.items() if s["reply"] is not None]
            if not live:
                continue
            replies = [state[i]["reply"] for i in live]
            actions = np.asarray(policy.act(stack_observations([r["obs"] for r in replies])), np.float32)
            if actions.ndim != 3 or actions.shape[0] != len(live) or actions.shape[2] != 7:
                raise ValueError(f"policy.act returned shape {actions.shape}, expected ({len(live)}, H, 7)")
            for j, i in enumerate(live):
                state[i].update(reply=None, pending="step")
                workers[i].send("step", actions[j, :replan_steps])
    finally:
        bar.close()
        for w in workers:
            w.close()
    return log.records

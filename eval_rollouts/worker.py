"""An env worker: one process that owns one LIBERO env and answers reset / step requests over a
pipe. Started with multiprocessing's spawn method, optionally under another Python interpreter
(`python=`), so a simulator with conflicting dependencies can run beside the policy's."""

from __future__ import annotations

import multiprocessing as mp
import traceback
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class EnvSpec:
    suite: str
    cameras: tuple[str, ...]
    resolution: int
    render_quality: str = "lowpoly"  # envs.libero_env.RENDER_QUALITIES
    max_steps: int | None = None  # None: the suite's protocol value
    expert: bool = False  # also send the scripted expert's action with each observation
    # fixed: episode (task, k) starts from the suite's init state k (the evaluation protocol);
    # random: from the fresh layout seeded by validation_seed(task, k) (validation, never the test states)
    layouts: str = "fixed"


def validation_seed(task: int, k: int) -> int:
    """Seeds of validation layouts: apart from vla.collect's demonstration seeds (< 10^9 for
    any collection seed below 990), so a validation scene is never a training scene."""
    return 10**9 + 10_000 * task + k


def _serve(conn, spec: EnvSpec) -> None:
    from envs.experts import UnsupportedTask, make_expert
    from envs.libero_env import LiberoEnv

    env, task, expert, record = None, None, None, False

    def reply(obs, **extra):
        if spec.expert:  # the expert's action for this state travels with the observation
            obs = {**obs, "expert_action": expert.act(obs) if expert is not None else None}
        conn.send(("ok", {"obs": obs, **extra}))

    while True:
        cmd, arg = conn.recv()
        try:
            if cmd == "close":
                break
            if cmd == "crash":  # for tests: die the way a segfaulting simulator would
                import os

                os._exit(1)
            if cmd == "reset":
                t, init, record = arg  # record: send every frame of this episode (for a video)
                if t != task:
                    if env is not None:
                        env.close()
                    env, task = LiberoEnv(spec.suite, t, cameras=list(spec.cameras), resolution=spec.resolution,
                                          render_quality=spec.render_quality, max_steps=spec.max_steps), t
                if spec.layouts == "random":
                    obs, _ = env.reset(seed=validation_seed(t, init))
                else:
                    obs, _ = env.reset(init_state_index=init)
                expert = None
                if spec.expert:
                    try:
                        expert = make_expert(env)
                        expert.reset()
                    except UnsupportedTask:
                        expert = None
                reply(obs, done=False, success=False, steps=0, frames=[obs["images"]] if record else [],
                      instruction=env.instruction)
            elif cmd == "step":
                frames, done, info = [], False, {"success": False, "steps": 0}
                chunk = np.asarray(arg, np.float32).reshape(-1, 7)
                for k, a in enumerate(chunk):
                    # the policy sees only the chunk's last observation: render the rest only for videos
                    obs, _, term, trunc, info = env.step(a, render=record or k == len(chunk) - 1)
                    if record:
                        frames.append(obs["images"])
                    if term or trunc:
                        done = True
                        break
                reply(obs, done=done, success=bool(info["success"]), steps=int(info["steps"]), frames=frames)
            else:
                raise ValueError(f"unknown worker command {cmd!r}")
        except Exception:
            conn.send(("error", traceback.format_exc()))
    if env is not None:
        env.close()


class EnvWorker:
    """The parent's handle on a worker process."""

    def __init__(self, spec: EnvSpec, python: str | None = None):
        ctx = mp.get_context("spawn")
        if python:
            ctx.set_executable(python)
        self.conn, child = ctx.Pipe()
        self.process = ctx.Process(target=_serve, args=(child, spec), daemon=True)
        self.process.start()
        child.close()

    def send(self, cmd: str, arg=None) -> None:
        self.conn.send((cmd, arg))

    def recv(self) -> dict:
        """The worker's reply; RuntimeError if it failed or died."""
        try:
            status, payload = self.conn.recv()
        except (EOFError, ConnectionResetError, BrokenPipeError) as e:
            raise RuntimeError(f"env worker died (exit code {self.process.exitcode})") from e
        if status == "error":
            raise RuntimeError(f"env worker failed:\n{payload}")
        return payload

    def close(self) -> None:
        try:
            self.conn.send(("close", None))
        except (BrokenPipeError, OSError):
            pass
        self.process.join(timeout=10)
        if self.process.is_alive():
            self.process.kill()

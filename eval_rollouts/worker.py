"""An env worker: one process that owns one LIBERO env and answers reset / step requests over a
socket. Runs under this interpreter or another one (`python=`), so a simulator with conflicting
dependencies can run beside the policy's."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import traceback
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]  # on the worker's path: another interpreter need not have us installed


@dataclass(frozen=True)
class EnvSpec:
    suite: str
    cameras: tuple[str, ...]
    resolution: int
    render_quality: str = "lowpoly"  # envs.lowpoly.RENDER_QUALITIES
    max_steps: int | None = None  # None: the suite's protocol value
    expert: bool = False  # also send the scripted expert's action with each observation
    # fixed: episode (task, k) starts from the suite's init state k (the evaluation protocol);
    # random: from the fresh layout seeded by layout_seed("random", task, k) (validation, never the test states);
    # dagger: from the fresh layout seeded by layout_seed("dagger", task, k) (DAgger's rollouts)
    layouts: str = "fixed"
    layout_seed_base: int | None = None  # layouts=random from this seed base instead (held-out layouts)
    # DAgger: send every step's observation with the scripted expert's action for it ("labelled");
    # the expert drives a chunk with this probability (beta), the policy otherwise
    label: bool = False
    expert_drives: float = 0.0
    # perturbed episodes (envs.perturb): ((axis, level), ...); episode (task, k) takes entry k mod
    # its length, drawn from (axis, level, task, k) alone
    perturb: tuple = ()


# Fresh layouts' seeds: base + 10^4 task + k, each kind of layout from its own base, all apart from
# vla.collect's demonstration seeds (< 10^9 for any collection seed below 990): a validation or
# DAgger scene is never a training scene. eval.layout_seed_base replaces validation's base
# (held-out layouts, e.g. 4 x 10^9).
LAYOUT_SEED_BASES = {"random": 10**9, "dagger": 2 * 10**9}


def layout_seed(layouts: str, task: int, k: int, base: int | None = None) -> int | None:
    """The fresh layout's seed of episode (task, k), or None for layouts=fixed (init state k)."""
    if layouts not in LAYOUT_SEED_BASES:
        return None
    return (LAYOUT_SEED_BASES[layouts] if base is None else base) + 10_000 * task + k


def check_layout_seeds(layouts: str, base: int | None, tasks: int, trials: int) -> None:
    """Refuse, before any env starts, seeds that numpy (LIBERO's placement sampler) cannot take."""
    if base is not None and (not isinstance(base, int) or base < 0):
        raise ValueError(f"eval.layout_seed_base must be a non-negative int or null, not {base!r}")
    top = layout_seed(layouts, tasks - 1, trials - 1, base)
    if top is not None and top >= 2**32:
        raise ValueError(f"eval.layout_seed_base={base} gives layout seeds up to {top}, beyond numpy's 2**32-1")


class SetupError(Exception):
    """The worker's env cannot be made as asked: the parent gets a ValueError, not a retry."""


def make_env(spec: EnvSpec, task: int):
    """The env of a suite's task under this interpreter: LIBERO's, or RoboCasa's kitchen."""
    from envs.suites import get_suite

    suite = get_suite(spec.suite)
    if suite.simulator == "robocasa":
        from envs.robocasa_env import RoboCasaEnv

        return RoboCasaEnv(suite.task(task).name, cameras=spec.cameras, resolution=spec.resolution,
                           max_steps=spec.max_steps, render_quality=spec.render_quality)
    from envs.libero_env import LiberoEnv
    from envs.perturb import TEXTURES

    textures = tuple(TEXTURES["eval"]) if any(axis == "background" for axis, _ in spec.perturb) else ()
    return LiberoEnv(suite, task, cameras=list(spec.cameras), resolution=spec.resolution,
                     render_quality=spec.render_quality, max_steps=spec.max_steps, textures=textures)


def _serve(conn, spec: EnvSpec) -> None:
    from envs import UnsupportedTask
    from envs.episodes import make_expert, record_episode

    env, task, expert, record = None, None, None, False
    rng, learner_drove = None, False  # DAgger: who drives each chunk; did the learner drive the last one

    def use_task(t: int) -> None:
        nonlocal env, task
        if t != task:
            if env is not None:
                env.close()
            try:
                env, task = make_env(spec, t), t
            except ValueError as e:  # bad setup (a camera, a task, missing assets): no retry will help
                raise SetupError(str(e)) from None

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
                os._exit(1)
            if cmd == "reset":
                t, init, record = arg  # record: send every frame of this episode (for a video)
                use_task(t)
                seed = layout_seed(spec.layouts, t, init, spec.layout_seed_base)
                perturbation = None
                if spec.perturb:
                    from envs.perturb import draw

                    perturbation = draw(*spec.perturb[init % len(spec.perturb)], t, init, env.instruction)
                options = {"options": {"perturbation": perturbation}} if perturbation is not None else {}
                if seed is not None:
                    obs, _ = env.reset(seed=seed, **options)
                else:
                    obs, _ = env.reset(init_state_index=init, **options)
                expert, reached = None, None  # reached: the goal predicates that held at some step
                rng, learner_drove = np.random.default_rng([t, init]), False
                if spec.expert or spec.label:
                    try:
                        expert = make_expert(env)
                        expert.reset()
                    except UnsupportedTask:
                        expert = None
                reply(obs, done=False, success=False, steps=0, frames=[obs["images"]] if record else [],
                      instruction=obs["instruction"],
                      **({"perturbation": perturbation.record()} if perturbation is not None else {}))
            elif cmd == "demo":  # collection: one recorded scripted-expert episode (envs.episodes.record_episode)
                t, seed, init, noise = arg
                use_task(t)
                try:
                    expert = make_expert(env)
                except UnsupportedTask as e:
                    conn.send(("ok", {"unsupported": str(e)}))
                    continue
                success, frames = record_episode(env, expert, seed=seed, init_state_index=init, noise=noise)
                conn.send(("ok", {"success": success, "frames": frames, "instruction": env.instruction}))
            elif cmd == "step":
                frames, labelled, done, info = [], [], False, {"success": False, "steps": 0}
                chunk = np.asarray(arg, np.float32).reshape(-1, 7)
                if spec.label:
                    if expert is None:
                        raise ValueError(f"DAgger needs the scripted expert, which has no strategy for task {task}")
                    expert_drives = rng.random() < spec.expert_drives
                    if learner_drove:  # the expert plans again from wherever the learner left the scene
                        expert.reset(takeover=True)
                    learner_drove = not expert_drives
                for k, a in enumerate(chunk):
                    if spec.label:
                        label = expert.act(obs)
                        labelled.append({"images": obs["images"], "state": obs["state"], "action": label,
                                         "learner_acted": not expert_drives, "grasps": obs["grasps"]})
                        a = label if expert_drives else a
                    # the policy sees only the chunk's last observation: render the rest only for videos and labels
                    obs, _, term, trunc, info = env.step(a, render=record or spec.label or k == len(chunk) - 1)
                    if record:
                        frames.append(obs["images"])
                    if "goals_met" in info:
                        reached = [a or b for a, b in zip(reached or info["goals_met"], info["goals_met"])]
                    if term or trunc:
                        done = True
                        break
                reply(obs, done=done, success=bool(info["success"]), steps=int(info["steps"]), frames=frames,
                      labelled=labelled, **({"goals": [sum(reached), len(reached)]} if done and reached else {}))
            else:
                raise ValueError(f"unknown worker command {cmd!r}")
        except SetupError as e:
            conn.send(("invalid", str(e)))
        except Exception:
            conn.send(("error", traceback.format_exc()))
    if env is not None:
        env.close()


class EnvWorker:
    """The parent's handle on a worker: `python -m eval_rollouts.worker FD` started as a process of
    its own (not multiprocessing's spawn, whose child inherits the parent's sys.path and so this
    venv's packages even under another interpreter), talking over a private socket pair."""

    def __init__(self, spec: EnvSpec, python: str | None = None):
        ours, theirs = socket.socketpair()
        for end in (ours, theirs):  # blocking, whatever socket.setdefaulttimeout says (Ray's driver sets one)
            end.setblocking(True)
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
        try:
            self.process = subprocess.Popen([python or sys.executable, "-m", "eval_rollouts.worker", str(theirs.fileno())],
                                            pass_fds=[theirs.fileno()], env=env)
        except OSError as e:
            raise ValueError(f"cannot start an env worker under {python or sys.executable}: {e}") from None
        finally:
            theirs.close()
        self.conn = Connection(ours.detach())
        self.conn.send(spec)

    def send(self, cmd: str, arg=None) -> None:
        self.conn.send((cmd, arg))

    def poll(self) -> bool:
        """Whether a reply is waiting."""
        return self.conn.poll()

    @staticmethod
    def wait(workers: list[EnvWorker]) -> list[EnvWorker]:
        """Block until at least one of `workers` has a reply; the ones that have."""
        ready = wait([w.conn for w in workers])
        return [w for w in workers if w.conn in ready]

    def recv(self) -> dict:
        """The worker's reply; RuntimeError if it failed or died, ValueError if its env cannot be made."""
        try:
            status, payload = self.conn.recv()
        except (EOFError, ConnectionResetError, BrokenPipeError) as e:
            try:
                code = self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                code = None
            raise RuntimeError(f"env worker died (exit code {code})") from e
        if status == "invalid":
            raise ValueError(payload)
        if status == "error":  # the first line names the cause (the traceback's last line); the rest follows
            cause = payload.strip().splitlines()[-1] if payload.strip() else "no traceback"
            raise RuntimeError(f"env worker failed: {cause}\n{payload}")
        return payload

    def close(self) -> None:
        try:
            self.conn.send(("close", None))
        except (BrokenPipeError, OSError):
            pass
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.conn.close()


if __name__ == "__main__":  # the worker's side: serve the parent on the socket it passed down
    _conn = Connection(int(sys.argv[1]))
    try:
        _serve(_conn, _conn.recv())
    except (EOFError, ConnectionResetError, BrokenPipeError):
        pass  # the parent went away: nothing left to answer

"""Env workers as Ray actors (`eval.backend=ray`, `vla.collect backend=ray`): each actor lives on
some node of a Ray cluster and owns an ordinary env worker process there (eval_rollouts.worker,
under that node's interpreter for the suite), so the simulator side is the same code as with local
workers; the driver keeps the one batched policy call per step and the single dataset writer.

Every node needs this checkout and its venvs at the same paths (or an image that has them).
"""

from __future__ import annotations

import os

import ray
from ray.exceptions import RayActorError, RayTaskError

from .worker import EnvSpec, EnvWorker


def connect(address: str | None) -> None:
    """Join the cluster at `address` ("auto": the one `ray start` made on this machine; None: that
    one if $RAY_ADDRESS names it, else a local Ray started for this process)."""
    if not ray.is_initialized():
        # not Ray's own None, which also tries the last cluster started on this machine, stopped or not
        ray.init(address=address or os.environ.get("RAY_ADDRESS") or "local", log_to_driver=False,
                 include_dashboard=False)


@ray.remote(num_cpus=1)
class EnvActor:
    def __init__(self, spec: EnvSpec, python: str | None):
        self.worker = EnvWorker(spec, python)
        self.node = ray.get_runtime_context().get_node_id()

    def call(self, cmd: str, arg) -> dict:
        self.worker.send(cmd, arg)
        reply = self.worker.recv()
        if cmd == "reset":  # the episode's log says which node ran it
            reply["node"] = self.node
        return reply

    def close(self) -> None:
        self.worker.close()


class RayEnvWorker:
    """The driver's handle on one actor, with EnvWorker's send / poll / recv / close."""

    def __init__(self, spec: EnvSpec, python: str | None = None, address: str | None = None):
        connect(address)
        # SPREAD: one actor per node before two on one, so a cluster's cores all take part
        self.actor = EnvActor.options(scheduling_strategy="SPREAD").remote(spec, python)
        self.pending = None

    def send(self, cmd: str, arg=None) -> None:
        self.pending = self.actor.call.remote(cmd, arg)

    def poll(self) -> bool:
        return bool(ray.wait([self.pending], timeout=0)[0])

    @staticmethod
    def wait(workers: list[RayEnvWorker]) -> list[RayEnvWorker]:
        ready, _ = ray.wait([w.pending for w in workers], num_returns=1)
        return [w for w in workers if w.pending in ready]

    def recv(self) -> dict:
        """As EnvWorker.recv: RuntimeError if the worker or its actor failed or died, ValueError if
        its env cannot be made."""
        ref, self.pending = self.pending, None
        try:
            return ray.get(ref)
        except RayActorError as e:
            raise RuntimeError(f"env actor died: {e}") from None
        except RayTaskError as e:
            if isinstance(e.cause, ValueError):
                raise ValueError(str(e.cause)) from None
            raise RuntimeError(str(e.cause)) from None

    def close(self) -> None:
        try:
            ray.get(self.actor.close.remote(), timeout=15)
        except Exception:  # already dead, or stuck: the kill below settles it
            pass
        ray.kill(self.actor)

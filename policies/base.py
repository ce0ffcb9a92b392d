"""The Policy protocol that evaluation and serving rely on, and two policies without a model."""

from __future__ import annotations

from typing import Callable, Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class Policy(Protocol):
    """obs_batch: {"images": {camera: uint8[B, H, W, 3]}, "state": float32[B, 8],
    "instruction": list of B str, optionally "grasps": int[B] (completed grasp-release cycles,
    which a train.grasp_count policy reads)}. Returns float32 actions [B, H, 7] (H = the chunk length)."""

    def reset(self) -> None: ...

    def act(self, obs_batch: dict) -> np.ndarray: ...


def batch_size(obs_batch: dict) -> int:
    instr = obs_batch.get("instruction")
    if isinstance(instr, (list, tuple)):
        return len(instr)
    return int(np.asarray(obs_batch["state"]).shape[0])


class RandomPolicy:
    """Uniform actions in [-1, 1] (gripper -1 or +1): a floor for success tables."""

    def __init__(self, chunk_size: int = 1, action_dim: int = 7, seed: int = 0):
        self.chunk_size, self.action_dim, self.seed = chunk_size, action_dim, seed
        self.reset()

    def reset(self) -> None:
        self.rng = np.random.default_rng(self.seed)

    def act(self, obs_batch: dict) -> np.ndarray:
        a = self.rng.uniform(-1, 1, (batch_size(obs_batch), self.chunk_size, self.action_dim)).astype(np.float32)
        a[..., -1] = np.sign(a[..., -1]) + (a[..., -1] == 0)
        return a


class ScriptedPolicy:
    """One scripted controller per batch entry (e.g. envs.experts.TaskExpert, which reads the
    simulator's ground truth, so it must live beside its env): act(obs) -> float32[7]."""

    def __init__(self, controllers: list, reset_fn: Callable[[object], None] | None = None):
        self.controllers, self.reset_fn = list(controllers), reset_fn

    def reset(self) -> None:
        for c in self.controllers:
            (self.reset_fn or (lambda x: x.reset()))(c)

    def act(self, obs_batch: dict) -> np.ndarray:
        B = batch_size(obs_batch)
        if B != len(self.controllers):
            raise ValueError(f"batch of {B} observations for {len(self.controllers)} scripted controllers")
        out = []
        for i, c in enumerate(self.controllers):
            obs = {"images": {k: v[i] for k, v in obs_batch.get("images", {}).items()},
                   "state": np.asarray(obs_batch["state"])[i], "instruction": obs_batch["instruction"][i]}
            out.append(np.asarray(c.act(obs), np.float32))
        return np.stack(out)[:, None, :]

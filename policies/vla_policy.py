"""VLAPolicy: a trained checkpoint behind the Policy protocol (batched, un-normalised actions)."""

from __future__ import annotations

import numpy as np
import torch

from .checkpoint import load_model_from_checkpoint
from .vla_model import VLAModel


class VLAPolicy:
    def __init__(self, model: VLAModel):
        self.model = model.eval()
        self.spec = model.spec

    @classmethod
    def from_checkpoint(cls, path, device: str = "auto", dtype: str = "auto") -> "VLAPolicy":
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        return cls(load_model_from_checkpoint(path, device, dtype))

    def reset(self) -> None:
        pass  # stateless: each call sees one observation

    def act(self, obs_batch: dict) -> np.ndarray:
        instr = obs_batch["instruction"]
        images = obs_batch["images"]
        if isinstance(instr, str):  # a single observation: add the batch axis
            images = {k: np.asarray(v)[None] for k, v in images.items()}
            state = None if obs_batch.get("state") is None else np.asarray(obs_batch["state"])[None]
            grasps = None if obs_batch.get("grasps") is None else np.asarray(obs_batch["grasps"])[None]
            return self.act({"images": images, "state": state, "instruction": [instr], "grasps": grasps})
        processor = self.model.processor
        batch = processor.encode(images, obs_batch.get("state"), list(instr), grasps=obs_batch.get("grasps"))
        return processor.decode(self.model.predict(batch))

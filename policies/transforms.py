"""The observation transforms shared by training, evaluation and serving: camera images to the
model's resolution, state normalisation, the prompt. One place, so that what the model saw in
training is what it sees on the robot."""

from __future__ import annotations

import numpy as np
from PIL import Image

PROMPT = "What action should the robot take to {instruction}?"


def prompt_text(instruction: str) -> str:
    return PROMPT.format(instruction=instruction.strip().rstrip(".").lower())


def camera_images(images: dict, cameras: list[str], resolution: int) -> list[np.ndarray]:
    """The named cameras' upright uint8 [H, W, 3] images, resized (bilinear) to resolution²."""
    out = []
    for cam in cameras:
        if cam not in images:
            raise KeyError(f"observation has no image from camera {cam!r} (it has {sorted(images)})")
        img = np.asarray(images[cam])
        if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
            raise ValueError(f"camera {cam!r}: expected uint8 [H, W, 3], got {img.dtype} {img.shape}")
        if img.shape[:2] != (resolution, resolution):
            img = np.asarray(Image.fromarray(img).resize((resolution, resolution), Image.BILINEAR))
        out.append(img)
    return out


class StateNormalizer:
    """Proprioceptive state to zero mean, unit variance (statistics of the training data)."""

    def __init__(self, mean, std):
        self.mean = np.asarray(mean, np.float32)
        self.std = np.maximum(np.asarray(std, np.float32), 1e-6)

    def __call__(self, state) -> np.ndarray:
        s = np.asarray(state, np.float32)
        if s.shape[-1] != self.mean.shape[0]:
            raise ValueError(f"state has {s.shape[-1]} values, the policy was trained on {self.mean.shape[0]}")
        return (s - self.mean) / self.std

    def to_dict(self) -> dict:
        return {"mean": self.mean.tolist(), "std": self.std.tolist()}
